//! Prometheus metrics, computed from our tables at each scrape (they are the
//! truth, and a scrape every few seconds costs a handful of small queries,
//! in `db::metrics`).

use std::fmt::Write;

use super::App;
use crate::db;
use crate::domain::delivery::DeliveryState;

/// Buckets of the check-duration histogram, in seconds.
const BUCKETS: [f64; 10] = [0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

/// The Prometheus text exposition of the server's state.
pub async fn render(app: &App) -> anyhow::Result<String> {
    let mut conn = app.db.pool().acquire().await?;
    let mut out = String::new();
    let queue = db::metrics::queue_length(&mut conn).await?;
    family(
        &mut out,
        "holdq_queue_length",
        "gauge",
        "Uploads in the holding queue (queued or checking).",
    )?;
    writeln!(out, "holdq_queue_length {queue}")?;
    platforms(
        app,
        &mut out,
        &db::metrics::builds_by_platform(&mut conn).await?,
    )?;

    family(
        &mut out,
        "holdq_checks_infra_waiting",
        "gauge",
        "Platforms of uploads being checked that wait to retry after an infrastructure error, by reason.",
    )?;
    for (platform, reason, n) in db::metrics::infra_waits(&mut conn).await? {
        writeln!(
            out,
            "holdq_checks_infra_waiting{{platform=\"{platform}\",reason=\"{reason}\"}} {n}"
        )?;
    }

    let space = app.storage.space(app.config.storage.reserve.0)?;
    family(
        &mut out,
        "holdq_data_free_bytes",
        "gauge",
        "Bytes still free on the data directory's filesystem (uploads that would cross the reserve are refused).",
    )?;
    writeln!(out, "holdq_data_free_bytes {}", space.available)?;
    family(
        &mut out,
        "holdq_data_reserve_bytes",
        "gauge",
        "The free-space reserve of the data directory ([storage] reserve).",
    )?;
    writeln!(out, "holdq_data_reserve_bytes {}", space.reserve)?;

    let (accepted, rejected) = db::metrics::verdicts(&mut conn).await?;
    family(
        &mut out,
        "holdq_verdicts_total",
        "counter",
        "Verdicts given.",
    )?;
    writeln!(
        out,
        "holdq_verdicts_total{{verdict=\"accepted\"}} {accepted}"
    )?;
    writeln!(
        out,
        "holdq_verdicts_total{{verdict=\"rejected\"}} {rejected}"
    )?;

    durations(&mut out, &db::metrics::check_durations(&mut conn).await?)?;

    let outbox = db::metrics::outbox_states(&mut conn).await?;
    family(
        &mut out,
        "holdq_email_outbox",
        "gauge",
        "Emails in the outbox, by state (pending is the backlog).",
    )?;
    for state in DeliveryState::ALL {
        let n = outbox
            .iter()
            .find(|(s, _)| s == state.as_str())
            .map_or(0, |r| r.1);
        writeln!(out, "holdq_email_outbox{{state=\"{state}\"}} {n}")?;
    }

    let serial = db::stable::serial(&mut conn).await?;
    family(
        &mut out,
        "holdq_stable_serial",
        "gauge",
        "Serial of the stable repository.",
    )?;
    writeln!(out, "holdq_stable_serial {serial}")?;
    drop(conn);
    if super::mirror::primary_of(app).is_some() {
        mirror(&mut out, &super::mirror::status(app).await?)?;
    }
    Ok(out)
}

/// A follower's serial and how far it is behind its primary.
fn mirror(out: &mut String, status: &super::mirror::MirrorStatus) -> std::fmt::Result {
    family(
        out,
        "holdq_mirror_serial",
        "gauge",
        "Serial this mirror has applied.",
    )?;
    writeln!(out, "holdq_mirror_serial {}", status.serial)?;
    family(
        out,
        "holdq_mirror_primary_serial",
        "gauge",
        "The primary's serial when it last answered.",
    )?;
    writeln!(
        out,
        "holdq_mirror_primary_serial {}",
        status.primary_serial.unwrap_or(0)
    )?;
    family(
        out,
        "holdq_mirror_lag_serials",
        "gauge",
        "Serials behind the primary as last heard.",
    )?;
    writeln!(
        out,
        "holdq_mirror_lag_serials {}",
        status.behind.unwrap_or(0)
    )?;
    family(
        out,
        "holdq_mirror_seconds_since_contact",
        "gauge",
        "Seconds since the primary last answered (-1: never).",
    )?;
    writeln!(
        out,
        "holdq_mirror_seconds_since_contact {}",
        status.seconds_since_contact.unwrap_or(-1.0)
    )
}

/// The `# HELP` and `# TYPE` lines of a metric family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) -> std::fmt::Result {
    writeln!(out, "# HELP {name} {help}")?;
    writeln!(out, "# TYPE {name} {kind}")
}

/// Waiting and running build checks of every configured platform, from
/// (platform, pending, running) rows.
fn platforms(app: &App, out: &mut String, rows: &[(String, i64, i64)]) -> std::fmt::Result {
    let of = |name: &str| {
        rows.iter()
            .find(|(p, ..)| p == name)
            .map_or((0, 0), |r| (r.1, r.2))
    };
    family(
        out,
        "holdq_platform_queue_length",
        "gauge",
        "Build checks waiting for a worker, per platform.",
    )?;
    for p in &app.config.platforms {
        let (pending, _) = of(p.name.as_str());
        writeln!(
            out,
            "holdq_platform_queue_length{{platform=\"{}\"}} {pending}",
            p.name
        )?;
    }
    family(
        out,
        "holdq_checks_running",
        "gauge",
        "Checks running now, per platform.",
    )?;
    for p in &app.config.platforms {
        let (_, running) = of(p.name.as_str());
        writeln!(
            out,
            "holdq_checks_running{{platform=\"{}\"}} {running}",
            p.name
        )?;
    }
    Ok(())
}

/// The check-duration histogram, per kind, from (kind, ms) rows.
fn durations(out: &mut String, rows: &[(String, i64)]) -> std::fmt::Result {
    family(
        out,
        "holdq_check_duration_seconds",
        "histogram",
        "Duration of finished checks.",
    )?;
    let mut kinds: Vec<&str> = rows.iter().map(|(k, _)| k.as_str()).collect();
    kinds.sort();
    kinds.dedup();
    for kind in kinds {
        let secs: Vec<f64> = rows
            .iter()
            .filter(|(k, _)| k == kind)
            .map(|(_, ms)| *ms as f64 / 1000.0)
            .collect();
        for b in BUCKETS {
            let n = secs.iter().filter(|s| **s <= b).count();
            writeln!(
                out,
                "holdq_check_duration_seconds_bucket{{kind=\"{kind}\",le=\"{b}\"}} {n}"
            )?;
        }
        let (count, sum) = (secs.len(), secs.iter().sum::<f64>());
        writeln!(
            out,
            "holdq_check_duration_seconds_bucket{{kind=\"{kind}\",le=\"+Inf\"}} {count}"
        )?;
        writeln!(
            out,
            "holdq_check_duration_seconds_sum{{kind=\"{kind}\"}} {sum}"
        )?;
        writeln!(
            out,
            "holdq_check_duration_seconds_count{{kind=\"{kind}\"}} {count}"
        )?;
    }
    Ok(())
}
