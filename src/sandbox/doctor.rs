//! `holdq sandbox doctor`: what a check on each platform sees and runs
//! as, decided from the config exactly as the workers decide it, and one
//! probe run that shows it from the inside.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::disk::CheckDir;
use super::policy::{self, Containment, DiskMechanism, Identity};
use super::{RunSpec, Sandbox};
use crate::config::Config;

/// What the probe does inside: who it is, what it can see, what it can write.
fn probe_command(config: &Config) -> String {
    let data = policy::absolute(&config.data_dir);
    let mut forbidden = vec![
        data.display().to_string(),
        "/etc/shadow".into(),
        "/root".into(),
        "/home".into(),
        "/var/lib".into(),
        "/srv".into(),
        "/run".into(),
    ];
    if let Some(file) = &config.config_file {
        forbidden.push(policy::absolute(file).display().to_string());
    }
    format!(
        "echo \"id: $(id)\"; grep -E '^(CapEff|CapPrm|NoNewPrivs)' /proc/self/status; \
         echo \"/: $(ls / | tr '\\n' ' ')\"; \
         for p in {}; do if ls -d \"$p\" >/dev/null 2>&1; then echo \"visible: $p, holding: $(ls -A \"$p\" | tr '\\n' ' ')\"; else echo \"hidden: $p\"; fi; done; \
         df -h . /tmp | tail -n +2; \
         if echo probe > probe.txt; then echo 'writes its directory: yes'; fi; \
         if {{ echo probe > /usr/probe.txt; }} 2>/dev/null; then echo 'writes /usr: YES'; else echo 'writes /usr: no'; fi",
        forbidden
            .iter()
            .map(|p| format!("'{p}'"))
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// The report, probe included.
pub async fn report(config: &Config) -> anyhow::Result<String> {
    let sandbox = Sandbox::current()?.contain(config)?;
    let c = sandbox.containment();
    let mut out = String::new();
    let me = nix::unistd::getuid();
    writeln!(out, "holdq sandbox doctor (server account uid {me})")?;
    for warning in &c.warnings {
        writeln!(out, "warning: {warning}")?;
    }
    let sockets = tokio::task::spawn_blocking(policy::default_sockets).await?;
    for socket in &sockets {
        writeln!(
            out,
            "warning: the default mounts hold the socket {}; a check whose uid may write it can connect",
            socket.display()
        )?;
    }
    if sockets.is_empty() {
        writeln!(
            out,
            "sockets in /usr, /bin, /sbin, /lib*: none (those of /etc are never bound)"
        )?;
    }
    for platform in &config.platforms {
        writeln!(out, "\nplatform {}", platform.name)?;
        describe_platform(&mut out, config, c, platform)?;
        if c.refusal().is_some() {
            continue;
        }
        writeln!(out, "  probe run:")?;
        match probe(&sandbox, config, platform).await {
            Ok(text) => {
                for line in text.lines() {
                    writeln!(out, "    {line}")?;
                }
            }
            Err(e) => writeln!(out, "    FAILED: {e:#}")?,
        }
    }
    Ok(out)
}

/// What a check of `platform` runs as, sees and is limited to.
fn describe_platform(
    out: &mut String,
    config: &Config,
    c: &Containment,
    platform: &crate::config::PlatformConfig,
) -> std::fmt::Result {
    let identity = match &c.identity {
        Identity::DropFromRoot { base } => format!(
            "host uid/gid {base} + the sandbox's pid (one per run, owning nothing), no capabilities, no_new_privs; namespaces: mount, pid, net, ipc, uts"
        ),
        Identity::Subordinate {
            uid_start, count, ..
        } => format!(
            "a uid of the subordinate range {uid_start}..{} (newuidmap), no capabilities, no_new_privs",
            u64::from(*uid_start) + u64::from(*count)
        ),
        Identity::OwnUid => {
            "THE SERVER'S OWN ACCOUNT (sandbox.allow_own_uid): a check can read what the server can"
                .into()
        }
        Identity::Refused(why) => format!("none: checks are refused: {why}"),
    };
    writeln!(out, "  identity: {identity}")?;
    let mechanism = match c.disk {
        DiskMechanism::Loop => "a sparse ext4 image loop-mounted on each check directory",
        DiskMechanism::Watchdog => {
            "a watchdog measuring the check directory every 250 ms (cannot stop one large fallocate)"
        }
    };
    writeln!(
        out,
        "  disk: {} for the check directory and /tmp together, by {mechanism}",
        policy::human_size(platform.disk.0)
    )?;
    writeln!(
        out,
        "  limits: time {:?}, memory {}, processes {}",
        platform.timeout,
        policy::human_size(platform.memory.0),
        config.limits.check_processes
    )?;
    let system: Vec<&str> = policy::SYSTEM_DIRS
        .iter()
        .copied()
        .filter(|d| Path::new(d).exists())
        .collect();
    writeln!(
        out,
        "  read-only: {} (symlinks kept as symlinks)",
        system.join(" ")
    )?;
    writeln!(
        out,
        "  /etc: a tmpfs with one bind per world-readable entry, without {}",
        policy::ETC_SECRETS.join(" ")
    )?;
    let mounts: Vec<String> = platform
        .mounts
        .iter()
        .map(|m| policy::absolute(m).display().to_string())
        .collect();
    writeln!(
        out,
        "  platform mounts (read-only): {}",
        if mounts.is_empty() {
            "none".into()
        } else {
            mounts.join(" ")
        }
    )?;
    writeln!(
        out,
        "  writable: the check directory, /tmp inside it; fresh /dev, /dev/shm (64 MiB tmpfs), /proc of its own PID namespace"
    )?;
    writeln!(out, "  environment passed: {}", platform.env.join(" "))?;
    let hidden: Vec<String> = c.hidden.iter().map(|p| p.display().to_string()).collect();
    writeln!(
        out,
        "  never visible: {} /run /var/run /var/lib /srv, home directories not in mounts",
        hidden.join(" ")
    )?;
    if !c.sockets.is_empty() {
        let sockets: Vec<String> = c.sockets.iter().map(|p| p.display().to_string()).collect();
        writeln!(out, "  sockets left out of mounts: {}", sockets.join(" "))?;
    }
    Ok(())
}

async fn probe(
    sandbox: &Sandbox,
    config: &Config,
    platform: &crate::config::PlatformConfig,
) -> anyhow::Result<String> {
    let work = config.data_dir.join("work");
    let (bytes, loop_disk) = (platform.disk.0, sandbox.loop_disk());
    let dir = tokio::task::spawn_blocking(move || CheckDir::new(&work, bytes, loop_disk)).await??;
    let (home, tmp) = (dir.path().join("home"), dir.path().join("tmp"));
    // The command sees its directory on /check.
    std::fs::create_dir_all(&home)?;
    std::fs::create_dir_all(&tmp)?;
    let spec = RunSpec {
        root: dir.path().to_owned(),
        tmp,
        cwd: dir.path().to_owned(),
        command: probe_command(config),
        env: vec![
            ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
            ("HOME".into(), format!("{}/home", super::CHECK_DIR)),
        ],
        timeout: Duration::from_secs(30),
        memory_bytes: platform.memory.0,
        max_processes: config.limits.check_processes,
        disk_bytes: platform.disk.0,
        mounts: platform.mounts.clone(),
        output_cap: 64 << 10,
        state_dir: config.data_dir.join("sandbox"),
    };
    let started = std::time::Instant::now();
    let outcome = sandbox.run(&spec, &CancellationToken::new()).await?;
    Ok(format!(
        "{}ended: {:?} in {} ms",
        outcome.output,
        outcome.ending,
        started.elapsed().as_millis()
    ))
}
