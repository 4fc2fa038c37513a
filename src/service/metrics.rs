//! Prometheus metrics, computed from our tables at each scrape (they are the
//! truth, and a scrape every few seconds costs a handful of small queries).

use std::fmt::Write;

use super::App;
use crate::db;

/// Buckets of the check-duration histogram, in seconds.
const BUCKETS: [f64; 10] = [0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

/// The Prometheus text exposition of the server's state.
pub async fn render(app: &App) -> anyhow::Result<String> {
    let mut conn = app.db.pool().acquire().await?;
    let mut out = String::new();

    let pending: Vec<(String, i64)> = sqlx::query_as(
        "SELECT state, COUNT(*) FROM uploads WHERE state IN ('queued', 'checking') GROUP BY state",
    )
    .fetch_all(&mut *conn)
    .await?;
    let total: i64 = pending.iter().map(|(_, n)| n).sum();
    writeln!(
        out,
        "# HELP holdq_queue_length Uploads in the holding queue (queued or checking)."
    )?;
    writeln!(out, "# TYPE holdq_queue_length gauge")?;
    writeln!(out, "holdq_queue_length {total}")?;

    let by_platform: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT c.platform, \
           SUM(CASE WHEN c.state = 'pending' THEN 1 ELSE 0 END), \
           SUM(CASE WHEN c.state = 'running' THEN 1 ELSE 0 END) \
         FROM checks c JOIN uploads u ON u.id = c.upload_id \
         WHERE u.state = 'checking' AND c.platform <> '' AND c.kind = 'build' GROUP BY c.platform",
    )
    .fetch_all(&mut *conn)
    .await?;
    writeln!(
        out,
        "# HELP holdq_platform_queue_length Build checks waiting for a worker, per platform."
    )?;
    writeln!(out, "# TYPE holdq_platform_queue_length gauge")?;
    for p in &app.config.platforms {
        let n = by_platform
            .iter()
            .find(|(name, ..)| name == p.name.as_str())
            .map(|r| r.1)
            .unwrap_or(0);
        writeln!(
            out,
            "holdq_platform_queue_length{{platform=\"{}\"}} {n}",
            p.name
        )?;
    }
    writeln!(
        out,
        "# HELP holdq_checks_running Checks running now, per platform."
    )?;
    writeln!(out, "# TYPE holdq_checks_running gauge")?;
    for p in &app.config.platforms {
        let n = by_platform
            .iter()
            .find(|(name, ..)| name == p.name.as_str())
            .map(|r| r.2)
            .unwrap_or(0);
        writeln!(out, "holdq_checks_running{{platform=\"{}\"}} {n}", p.name)?;
    }

    let verdicts: Vec<(i64, i64)> =
        sqlx::query_as("SELECT accepted, COUNT(*) FROM verdicts GROUP BY accepted")
            .fetch_all(&mut *conn)
            .await?;
    writeln!(out, "# HELP holdq_verdicts_total Verdicts given.")?;
    writeln!(out, "# TYPE holdq_verdicts_total counter")?;
    for (accepted, label) in [(1, "accepted"), (0, "rejected")] {
        let n = verdicts
            .iter()
            .find(|(a, _)| *a == accepted)
            .map(|r| r.1)
            .unwrap_or(0);
        writeln!(out, "holdq_verdicts_total{{verdict=\"{label}\"}} {n}")?;
    }

    let durations: Vec<(String, i64)> =
        sqlx::query_as("SELECT kind, duration_ms FROM checks WHERE duration_ms IS NOT NULL AND state IN ('passed', 'failed')")
            .fetch_all(&mut *conn)
            .await?;
    writeln!(
        out,
        "# HELP holdq_check_duration_seconds Duration of finished checks."
    )?;
    writeln!(out, "# TYPE holdq_check_duration_seconds histogram")?;
    let mut kinds: Vec<&str> = durations.iter().map(|(k, _)| k.as_str()).collect();
    kinds.sort();
    kinds.dedup();
    for kind in kinds {
        let secs: Vec<f64> = durations
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
        writeln!(
            out,
            "holdq_check_duration_seconds_bucket{{kind=\"{kind}\",le=\"+Inf\"}} {}",
            secs.len()
        )?;
        writeln!(
            out,
            "holdq_check_duration_seconds_sum{{kind=\"{kind}\"}} {}",
            secs.iter().sum::<f64>()
        )?;
        writeln!(
            out,
            "holdq_check_duration_seconds_count{{kind=\"{kind}\"}} {}",
            secs.len()
        )?;
    }

    let outbox: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, COUNT(*) FROM outbox GROUP BY state")
            .fetch_all(&mut *conn)
            .await?;
    writeln!(
        out,
        "# HELP holdq_email_outbox Emails in the outbox, by state (pending is the backlog)."
    )?;
    writeln!(out, "# TYPE holdq_email_outbox gauge")?;
    for state in ["pending", "sent", "failed"] {
        let n = outbox
            .iter()
            .find(|(s, _)| s == state)
            .map(|r| r.1)
            .unwrap_or(0);
        writeln!(out, "holdq_email_outbox{{state=\"{state}\"}} {n}")?;
    }
    let serial = db::stable::serial(&mut conn).await?;
    writeln!(
        out,
        "# HELP holdq_stable_serial Serial of the stable repository."
    )?;
    writeln!(out, "# TYPE holdq_stable_serial gauge")?;
    writeln!(out, "holdq_stable_serial {serial}")?;
    Ok(out)
}
