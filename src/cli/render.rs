//! How client commands print: a table or lines for people, JSON with `--json`.

use super::client::Receipt;
use crate::domain::check::CheckState;
use crate::service::obsolete::Dependents;
use crate::service::operators::{PlatformView, WorkerView};
use crate::service::passmark::{PassMarkChange, Simulation};
use crate::service::queue::UploadView;

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub fn receipt(r: &Receipt, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(r);
    }
    println!(
        "upload {} of {} {}: {}, position {} in the holding queue",
        r.id, r.name, r.version, r.state, r.position
    );
    for old in &r.superseded {
        println!("  supersedes upload {old}");
    }
    Ok(())
}

/// `holdq upload --list`: the unfinished uploads the server holds.
pub fn unfinished_uploads(
    uploads: &[crate::service::tus::TusUpload],
    json: bool,
) -> anyhow::Result<()> {
    json_or(&uploads, json, |uploads| {
        if uploads.is_empty() {
            println!("no unfinished uploads");
        }
        for u in uploads.iter() {
            let percent = (u.offset * 100).checked_div(u.length).unwrap_or(100);
            println!(
                "{}  {}  {}/{} bytes ({percent}%)  expires {}",
                u.id,
                u.filename.as_deref().unwrap_or("(unnamed)"),
                u.offset,
                u.length,
                crate::service::format_time(u.expires_at),
            );
        }
        if !uploads.is_empty() {
            println!("resume: holdq upload FILE (again); end one: holdq upload --abort ID");
        }
    })
}

/// JSON with `--json`, else what `text` prints.
pub fn json_or<T: serde::Serialize>(
    value: &T,
    json: bool,
    text: impl FnOnce(&T),
) -> anyhow::Result<()> {
    if json {
        return print_json(value);
    }
    text(value);
    Ok(())
}

pub fn workers(list: &[WorkerView], json: bool) -> anyhow::Result<()> {
    json_or(&list, json, |list| {
        if list.is_empty() {
            println!("no worker has beaten in the last minute");
        }
        for w in list.iter() {
            let doing = w
                .current_check
                .map(|c| format!("running check {c}"))
                .unwrap_or_else(|| "idle".into());
            println!(
                "{:<16} {:<48} {:<12} last heartbeat {}",
                w.platform, w.name, doing, w.last_heartbeat
            );
        }
    })
}

pub fn platforms(list: &[PlatformView], json: bool) -> anyhow::Result<()> {
    json_or(&list, json, |list| {
        for p in list.iter() {
            let state = if p.paused { "paused" } else { "running" };
            println!(
                "{:<24} {state:<8} {} local workers",
                p.name, p.local_workers
            );
        }
    })
}

pub fn passmark_history(list: &[PassMarkChange], json: bool) -> anyhow::Result<()> {
    json_or(&list, json, |list| {
        for c in list.iter() {
            println!(
                "{}  {}  {}: {} -> {}  ({})",
                c.at,
                c.by.as_deref().unwrap_or("-"),
                c.key,
                c.old,
                c.new,
                c.why
            );
        }
    })
}

pub fn simulation(s: &Simulation, json: bool) -> anyhow::Result<()> {
    json_or(s, json, |s| {
        println!(
            "{} past verdicts re-scored; {} would change",
            s.considered,
            s.flips.len()
        );
        let word = |accepted: bool| if accepted { "accepted" } else { "rejected" };
        for f in &s.flips {
            println!(
                "  upload {} {} {}: {} ({:.2}) -> {} ({:.2})",
                f.upload_id,
                f.name,
                f.version,
                word(f.accepted_before),
                f.score_before,
                word(f.accepted_after),
                f.score_after
            );
        }
    })
}

pub fn queue(uploads: &[UploadView], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&uploads);
    }
    if uploads.is_empty() {
        println!("the holding queue is empty");
        return Ok(());
    }
    println!(
        "{:>4}  {:>6}  {:<24} {:<14} {:<10} since",
        "POS", "ID", "NAME", "VERSION", "STATE"
    );
    for u in uploads {
        println!(
            "{:>4}  {:>6}  {:<24} {:<14} {:<10} {}",
            u.position.unwrap_or_default(),
            u.id,
            u.name,
            u.version,
            u.state.as_str(),
            u.created_at
        );
        for w in &u.waiting_for {
            println!("{:>14} waiting for {w}", "");
        }
    }
    Ok(())
}

pub fn upload(u: &UploadView, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(u);
    }
    println!("upload {}: {} {}", u.id, u.name, u.version);
    println!("  state:       {}", u.state);
    if let Some(p) = u.position {
        println!("  position:    {p} in the holding queue");
    }
    if let Some(by) = u.superseded_by {
        println!("  superseded by upload {by}");
    }
    if let Some(reason) = &u.reason {
        println!("  reason:      {reason}");
    }
    println!("  sha256:      {}", u.sha256);
    println!("  size:        {} bytes", u.size_bytes);
    if u.maintainers.is_empty() {
        println!("  maintainers: (shown to the package's owners and operators)");
    } else {
        println!("  maintainers: {}", u.maintainers.join(", "));
    }
    println!("  uploaded:    {}", u.created_at);
    if let Some(v) = &u.verdict {
        let word = if v.accepted { "accepted" } else { "rejected" };
        println!(
            "  verdict:     {word}, score {:.2} against a pass mark of {:.2}",
            v.score, v.threshold
        );
        if v.stable_moved {
            println!(
                "               the stable repository moved under this upload: sync with it and upload again"
            );
        }
    }
    for e in &u.emails {
        let when = e
            .sent_at
            .as_deref()
            .map(|t| format!(" at {t}"))
            .unwrap_or_default();
        let why = e
            .last_error
            .as_deref()
            .map(|m| format!(" (last error: {m})"))
            .unwrap_or_default();
        let to =
            e.to.as_deref()
                .map(|to| format!(" to {to}"))
                .unwrap_or_default();
        println!("  email:       {}{to}: {}{when}{why}", e.kind, e.state);
    }
    if !u.checks.is_empty() {
        println!("  checks:");
    }
    for c in &u.checks {
        let label = c.label();
        let took = c
            .duration_ms
            .map(|ms| format!(" ({:.1}s)", ms as f64 / 1000.0))
            .unwrap_or_default();
        let required = if c.required { ", required" } else { "" };
        let summary = match &c.infra {
            Some(infra) => infra.line.as_str(),
            None => c.summary.as_deref().unwrap_or(""),
        };
        println!(
            "    {label:<24} {:<8} weight {:.2}{required}{took}  {summary}",
            c.state, c.weight,
        );
        if c.state == CheckState::Failed
            && let Some(log) = &c.log
        {
            let lines: Vec<&str> = log.lines().collect();
            for line in &lines[lines.len().saturating_sub(20)..] {
                println!("      | {line}");
            }
        }
    }
    Ok(())
}

pub fn uploads(list: &[UploadView], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&list);
    }
    for u in list {
        let place = u
            .position
            .map(|p| format!(" (position {p})"))
            .unwrap_or_default();
        println!(
            "{:>6}  {} {}  {}{}  {}",
            u.id, u.name, u.version, u.state, place, u.created_at
        );
    }
    Ok(())
}

pub fn obsolete(o: &crate::service::obsolete::ObsoleteOutcome, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(o);
    }
    let verb = if o.dry_run { "would be" } else { "is now" };
    println!("{} {verb} obsolete: {}", o.package, o.reason);
    if let Some(r) = &o.replacement {
        println!("  replacement: {r}");
    }
    if o.pins.is_empty() {
        println!("  no dependents to pin");
    }
    for pin in &o.pins {
        let note = if pin.dependent_obsolete {
            " (obsolete itself: no email)"
        } else {
            ""
        };
        println!(
            "  pin {} {}: {}, <={}{note}",
            pin.dependent, pin.version, pin.requirement, pin.max
        );
    }
    if !o.dry_run {
        println!("  {} emails queued", o.emails);
    }
    for r in &o.removed {
        println!("  removed {r} (nothing depends on it)");
    }
    Ok(())
}

pub fn dependents(list: &Dependents, json: bool) -> anyhow::Result<()> {
    json_or(list, json, |list| {
        if list.dependents.is_empty() {
            println!("nothing depends on {}", list.package);
        }
        for name in &list.dependents {
            println!("{name}");
        }
    })
}

pub fn package(
    p: Option<&crate::service::stable::PackageView>,
    list: &[UploadView],
    json: bool,
) -> anyhow::Result<()> {
    if json {
        return print_json(&serde_json::json!({ "package": p, "uploads": list }));
    }
    if let Some(p) = p {
        println!("{}: {}", p.name, p.state);
        if let Some(o) = &p.obsolete {
            println!("  obsolete:    {}", o.reason);
            if let Some(r) = &o.replacement {
                println!("  replacement: {r}");
            }
        }
        let versions: Vec<&str> = p.versions.iter().map(|v| v.version.as_str()).collect();
        println!(
            "  stable:      {}",
            if versions.is_empty() {
                "-".to_owned()
            } else {
                versions.join(", ")
            }
        );
        println!(
            "  dependents:  {} {}",
            p.dependents_count,
            p.dependents.join(", ")
        );
        for (dep, pin) in &p.pins {
            println!("  pin:         {dep} {pin}");
        }
        for h in &p.history {
            println!("  {}  {}", h.at, h.event);
        }
    }
    uploads(list, false)
}

/// What `holdq fetch` fetched: one line per package and where it went.
pub fn fetched(
    resolved: &super::fetch::Resolved,
    out: &std::path::Path,
    json: bool,
) -> anyhow::Result<()> {
    json_or(resolved, json, |r| {
        for p in &r.packages {
            println!(
                "{} {} -> {}",
                p.name,
                p.version,
                out.join(&p.name).display()
            );
        }
        println!(
            "{} packages at stable serial {}; {} written",
            r.packages.len(),
            r.serial,
            out.join("resolved.toml").display()
        );
    })
}

pub fn mirror_status(s: &crate::service::mirror::MirrorStatus, json: bool) -> anyhow::Result<()> {
    json_or(s, json, |s| {
        match &s.primary {
            None => println!("not a mirror; stable serial {}", s.serial),
            Some(primary) => {
                println!("mirror of {primary}");
                println!("serial {}", s.serial);
                match (s.primary_serial, &s.last_contact) {
                    (Some(p), Some(at)) => println!(
                        "primary at serial {p} when last heard, {at} ({:.1} s ago): {} behind",
                        s.seconds_since_contact.unwrap_or_default(),
                        s.behind.unwrap_or_default()
                    ),
                    _ => println!("the primary has not answered yet"),
                }
                println!("restarts from the primary's snapshot: {}", s.snapshots);
            }
        }
        for peer in &s.peers {
            println!("pushes to {peer}");
        }
    })
}
