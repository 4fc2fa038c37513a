//! What each command does: parse, call a service (directly, or through the
//! server's API), render.

use std::path::Path;

use anyhow::Context;

use super::client::Client;
use super::render;
use super::{
    ClientArgs, Command, MailCommand, OwnerCommand, PassmarkCommand, PlatformCommand,
    SandboxCommand, ServerArgs, UserCommand,
};
use crate::config::{Config, Limits, Overrides};
use crate::db::Db;
use crate::domain::passmark::PassMark;
use crate::service::groups::GroupView;
use crate::service::operators::{PlatformView, Retried, WorkerView};
use crate::service::passmark::{PassMarkChange, PassMarkSet, Simulation};
use crate::service::users::Role;
use crate::service::{self, App, scheduler};
use crate::storage::archive::ArchiveLimits;

/// Runs one command: each has a function of its own below.
pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { server } => serve(&server).await,
        Command::Worker {
            platform,
            count,
            server,
            token_file,
            token,
            args,
        } => {
            let remote = match server {
                Some(server) => {
                    let token = worker_token(&args, token_file, token)?;
                    Some((server, token))
                }
                None => None,
            };
            worker(&args, &platform, count, remote).await
        }
        Command::Sandbox {
            command: SandboxCommand::Doctor,
            server,
        } => {
            print!(
                "{}",
                crate::sandbox::doctor::report(&load_config(&server)?).await?
            );
            Ok(())
        }
        Command::Pack { dir, out, json } => pack(&dir, out.as_deref(), json),
        Command::Upload {
            list: true, client, ..
        } => render::unfinished_uploads(
            &Client::new(&client)?.unfinished_uploads().await?,
            client.json,
        ),
        Command::Upload {
            abort: Some(id),
            client,
            ..
        } => {
            Client::new(&client)?.abort_upload(&id).await?;
            println!("unfinished upload {id} aborted");
            Ok(())
        }
        Command::Upload {
            files,
            together,
            client,
            ..
        } => upload(&files, together, &client).await,
        Command::Fetch {
            packages,
            out,
            locked,
            channel,
            client,
        } => fetch(&packages, &out, locked.as_deref(), channel, &client).await,
        Command::Queue { platform, client } => render::queue(
            &Client::new(&client)?.queue(platform.as_deref()).await?,
            client.json,
        ),
        Command::Passmark { command, client } => passmark(command, &client).await,
        Command::Mirror {
            command: super::MirrorCommand::Status { client },
        } => {
            let status: crate::service::mirror::MirrorStatus =
                Client::new(&client)?.get("/mirror/status").await?;
            render::mirror_status(&status, client.json)
        }
        Command::Workers { client } => {
            let list: Vec<WorkerView> = Client::new(&client)?.get("/workers").await?;
            render::workers(&list, client.json)
        }
        Command::Cancel {
            upload,
            why,
            client,
        } => cancel(upload, &why, &client).await,
        Command::Retry {
            upload,
            check,
            client,
        } => retry(upload, check, &client).await,
        Command::Platform { command, client } => platform(command, &client).await,
        Command::Status { target, client } => status(target, &client).await,
        Command::Obsolete {
            name,
            reason,
            replacement,
            dry_run,
            undo,
            client,
        } => obsolete(&name, reason, replacement, dry_run, undo, &client).await,
        Command::Dependents {
            name,
            transitive,
            client,
        } => {
            let list = Client::new(&client)?.dependents(&name, transitive).await?;
            render::dependents(&list, client.json)
        }
        Command::User { command, server } => {
            let db = open_db(&server).await?;
            let result = user(&db, command).await;
            db.close().await;
            result
        }
        Command::SandboxExec(_) | Command::SandboxInit(_) | Command::SandboxDrop(_) => {
            unreachable!("handled before the runtime starts")
        }
        Command::Mail {
            command: MailCommand::Test { email },
            server,
        } => mail_test(&email, &server).await,
        Command::Owner { command, server } => {
            let db = open_db(&server).await?;
            let result = owner(&db, command).await;
            db.close().await;
            result
        }
    }
}

async fn upload(
    files: &[std::path::PathBuf],
    together: bool,
    client: &ClientArgs,
) -> anyhow::Result<()> {
    let api = Client::new(client)?;
    if !together {
        for file in files {
            let receipt = api.upload(file).await?;
            render::receipt(&receipt, client.json)?;
        }
        return Ok(());
    }
    // One group, submitted by the server when the last member arrives.
    let group: GroupView = api
        .call(
            reqwest::Method::POST,
            "/groups",
            serde_json::json!({ "expected": files.len() }),
        )
        .await?;
    for file in files {
        let receipt = api
            .upload_to(file, Some(group.id))
            .await
            .with_context(|| format!("upload group {} refused as a whole", group.id))?;
        render::receipt(&receipt, client.json)?;
    }
    if !client.json {
        println!(
            "upload group {}: {} uploads, checked together and accepted or rejected as one",
            group.id,
            files.len()
        );
    }
    Ok(())
}

async fn fetch(
    packages: &[String],
    out: &Path,
    locked: Option<&Path>,
    channel: super::fetch::Channel,
    client: &ClientArgs,
) -> anyhow::Result<()> {
    let requests = packages
        .iter()
        .map(|p| p.parse())
        .collect::<anyhow::Result<Vec<super::fetch::Request>>>()?;
    let resolved =
        super::fetch::fetch(&Client::new(client)?, &requests, locked, channel, out).await?;
    render::fetched(&resolved, out, client.json)
}

async fn cancel(upload: i64, why: &str, client: &ClientArgs) -> anyhow::Result<()> {
    Client::new(client)?
        .post_no_content(
            &format!("/uploads/{upload}/cancel"),
            serde_json::json!({ "why": why }),
        )
        .await?;
    println!("upload {upload} cancelled; its maintainers will be told");
    Ok(())
}

async fn retry(upload: i64, check: Option<String>, client: &ClientArgs) -> anyhow::Result<()> {
    let answer: Retried = Client::new(client)?
        .call(
            reqwest::Method::POST,
            &format!("/uploads/{upload}/retry"),
            serde_json::json!({ "check": check }),
        )
        .await?;
    render::json_or(&answer, client.json, |a| {
        for label in &a.retried {
            println!("retrying {label}");
        }
    })
}

async fn platform(command: PlatformCommand, client: &ClientArgs) -> anyhow::Result<()> {
    let api = Client::new(client)?;
    let (name, verb) = match command {
        PlatformCommand::List => {
            let list: Vec<PlatformView> = api.get("/platforms").await?;
            return render::platforms(&list, client.json);
        }
        PlatformCommand::Pause { name } => (name, "pause"),
        PlatformCommand::Resume { name } => (name, "resume"),
    };
    let changed: PlatformView = api
        .call(
            reqwest::Method::POST,
            &format!("/platforms/{name}/{verb}"),
            serde_json::json!({}),
        )
        .await?;
    render::platforms(&[changed], client.json)
}

async fn obsolete(
    name: &str,
    reason: Option<String>,
    replacement: Option<String>,
    dry_run: bool,
    undo: bool,
    client: &ClientArgs,
) -> anyhow::Result<()> {
    let api = Client::new(client)?;
    if undo {
        api.undo_obsolete(name).await?;
        println!("{name} is no longer obsolete; its dependents' pins are lifted");
        return Ok(());
    }
    let outcome = api
        .obsolete(
            name,
            reason.as_deref().unwrap_or_default(),
            replacement.as_deref(),
            dry_run,
        )
        .await?;
    render::obsolete(&outcome, client.json)
}

async fn mail_test(email: &str, server: &ServerArgs) -> anyhow::Result<()> {
    let app = App::open(load_config(server)?).await?;
    let sent = service::notify::send_samples(&app, email).await?;
    println!(
        "sent {sent} sample emails to {email} through {:?}",
        app.mailer
    );
    Ok(())
}

async fn owner(db: &Db, command: OwnerCommand) -> anyhow::Result<()> {
    match command {
        OwnerCommand::Add { name, email } => {
            service::owners::add_owner(db, &name, &email).await?;
            println!("{email} now owns {name}");
        }
        OwnerCommand::Remove { name, email } => {
            service::owners::remove_owner(db, &name, &email).await?;
            println!("{email} no longer owns {name}");
        }
    }
    Ok(())
}

/// A remote worker's token: `--token-file` (or `HOLDQ_TOKEN_FILE`), else
/// `--token` (with a warning: the command line is public on the machine),
/// else `HOLDQ_TOKEN`, else the config's `[worker] token_file`.
fn worker_token(
    args: &ServerArgs,
    token_file: Option<std::path::PathBuf>,
    token: Option<String>,
) -> anyhow::Result<String> {
    if let Some(path) = token_file {
        return crate::config::read_secret(&path).context("--token-file");
    }
    if let Some(token) = token {
        warn_secret_on_command_line("--token", "--token-file FILE or HOLDQ_TOKEN");
        return Ok(token);
    }
    if let Some(token) = std::env::var("HOLDQ_TOKEN").ok().filter(|t| !t.is_empty()) {
        return Ok(token);
    }
    match load_config(args)?.worker.token_file {
        Some(path) => crate::config::read_secret(&path).context("[worker] token_file"),
        None => anyhow::bail!(
            "a worker with --server needs a token: --token-file FILE (or [worker] token_file, or HOLDQ_TOKEN) holding a worker token from `holdq user add EMAIL --worker`"
        ),
    }
}

/// Warns that a secret was passed as a command-line argument: in the log
/// for `serve` and `worker`, on stderr for the other commands.
fn warn_secret_on_command_line(flag: &str, instead: &str) {
    let warning = format!(
        "{flag} was given on the command line, where every user of this machine can read it (ps, /proc/PID/cmdline); use {instead} instead"
    );
    if tracing::dispatcher::has_been_set() {
        tracing::warn!("{warning}");
    } else {
        eprintln!("warning: {warning}");
    }
}

fn load_config(args: &ServerArgs) -> anyhow::Result<Config> {
    if let Some(url) = &args.database_url
        && crate::config::redact_url(url) != *url
    {
        warn_secret_on_command_line(
            "--database-url with a password",
            "--database-url-file FILE or HOLDQ_DATABASE_URL",
        );
    }
    let flags = Overrides {
        listen: args.listen.clone(),
        data_dir: args.data_dir.clone(),
        database_url: args.database_url.clone(),
        database_url_file: args.database_url_file.clone(),
        public_url: None,
        mirror_of: args.mirror_of.clone(),
    };
    Config::load(args.config.as_deref(), |k| std::env::var(k).ok(), &flags)
}

async fn open_db(args: &ServerArgs) -> anyhow::Result<Db> {
    let config = load_config(args)?;
    Db::connect(&config.database_url).await
}

async fn serve(args: &ServerArgs) -> anyhow::Result<()> {
    let config = load_config(args)?;
    tracing::debug!(config = ?config, "configuration");
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let app = App::open(config).await?;
    tokio::task::spawn_blocking(crate::sandbox::policy::warn_default_sockets);
    tracing::info!(
        data_dir = %app.config.data_dir.display(),
        platforms = ?app.config.platforms.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        "holdq started"
    );
    let background = service::server::start(&app).await?;
    let result = tokio::select! {
        result = crate::http::serve(listener, app.clone()) => result,
        _ = stop_signal() => Ok(()),
    };
    tracing::info!("shutting down");
    background.stop().await;
    app.db.close().await;
    result
}

/// `holdq worker`: workers for one platform, against the servers' database.
/// With `remote` (server URL, token) the worker shares no disk with the
/// server: it fetches archives over HTTP into its own data directory and
/// leaves verdicts to the servers.
async fn worker(
    args: &ServerArgs,
    platform: &str,
    count: u32,
    remote: Option<(String, String)>,
) -> anyhow::Result<()> {
    let mut config = load_config(args)?;
    if config.platform(platform).is_none() {
        let name = crate::domain::PackageName::parse(platform)
            .map_err(|e| anyhow::anyhow!("{platform:?} is not a platform name: {e}"))?;
        if remote.is_none() {
            anyhow::bail!(
                "no platform {platform:?} in the config (it has: {})",
                config
                    .platforms
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        tracing::info!(
            check.platform = platform,
            "the config does not describe the platform; using the default limits"
        );
        config
            .platforms
            .push(crate::config::PlatformConfig::named(name));
    }
    let store = match &remote {
        Some((server, token)) => {
            let store = crate::storage::fetch::RemoteStore::new(
                server,
                token,
                &config.data_dir.join("cache"),
            )?;
            // The server's policy says what the token may do; a worker
            // needs every upload's archive.
            let me: crate::service::authz::Account = serde_json::from_value(store.whoami().await?)
                .context("the server's answer to GET /api/v1/me")?;
            if !me
                .may
                .contains(&crate::service::authz::Action::FetchUploadArchive)
            {
                anyhow::bail!(
                    "the token of user {} may not fetch upload archives; make a worker's token with `holdq user add EMAIL --worker`",
                    me.user.id
                );
            }
            tracing::info!(
                server = store.server(),
                user.id = me.user.id,
                "fetching archives from the server"
            );
            Some(std::sync::Arc::new(store))
        }
        None => None,
    };
    let mut app = App::open(config).await?;
    tokio::task::spawn_blocking(crate::sandbox::policy::warn_default_sockets);
    app.remote = store;
    let platform = app
        .config
        .platform(platform)
        .cloned()
        .expect("the platform was added above");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let tasks = scheduler::spawn_workers(&app, &platform, count, shutdown.clone());
    stop_signal().await;
    shutdown.cancel();
    for task in tasks {
        let _ = task.await;
    }
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
    }
}

fn pack(dir: &Path, out: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let limits = Limits::default();
    let (path, summary) = crate::storage::pack::pack(
        dir,
        out,
        ArchiveLimits {
            unpacked_bytes: limits.unpacked_bytes.0,
            entries: limits.entries,
        },
    )?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "path": path,
                "name": summary.manifest.name,
                "version": summary.manifest.version.to_string(),
                "entries": summary.entries,
                "unpacked_bytes": summary.unpacked_bytes,
            })
        );
    } else {
        println!(
            "packed {} {} into {} ({} entries, {} bytes unpacked)",
            summary.manifest.name,
            summary.manifest.version,
            path.display(),
            summary.entries,
            summary.unpacked_bytes
        );
    }
    Ok(())
}

async fn status(target: Option<String>, args: &ClientArgs) -> anyhow::Result<()> {
    let api = Client::new(args)?;
    match target {
        None => render::queue(&api.queue(None).await?, args.json),
        Some(t) => match t.parse::<i64>() {
            Ok(id) => render::upload(&api.upload_status(id).await?, args.json),
            Err(_) => {
                crate::domain::PackageName::parse(&t)?;
                let package = api.package(&t).await?;
                let uploads = match api.package_uploads(&t).await {
                    Ok(list) => list,
                    Err(_) if package.is_some() => Vec::new(),
                    Err(e) => return Err(e),
                };
                render::package(package.as_ref(), &uploads, args.json)
            }
        },
    }
}

async fn user(db: &Db, command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Add {
            email,
            operator,
            worker,
        } => {
            let role = match (operator, worker) {
                (true, _) => Role::Operator,
                (false, true) => Role::Worker,
                (false, false) => Role::Maintainer,
            };
            let (user, token) = service::users::add_user(db, &email, role).await?;
            eprintln!(
                "added {} {} (id {}); their API token, shown this once:",
                role.as_str(),
                user.email,
                user.id
            );
            println!("{token}");
        }
        UserCommand::Token { email } => {
            let token = service::users::issue_token(db, &email).await?;
            eprintln!("a new API token for {email}, shown this once:");
            println!("{token}");
        }
    }
    Ok(())
}

async fn passmark(command: PassmarkCommand, args: &ClientArgs) -> anyhow::Result<()> {
    let api = Client::new(args)?;
    match command {
        PassmarkCommand::Show => {
            let mark: PassMark = api.get("/passmark").await?;
            render::json_or(&mark, args.json, |m| {
                println!("{}", serde_json::to_string_pretty(m).unwrap_or_default())
            })
        }
        PassmarkCommand::Set { key, value, why } => {
            let answer: PassMarkSet = api
                .call(
                    reqwest::Method::PUT,
                    "/passmark",
                    serde_json::json!({ "key": key, "value": value, "why": why }),
                )
                .await?;
            render::json_or(&answer, args.json, |a| {
                println!("{}: {} -> {}", a.change.key, a.change.old, a.change.new);
            })
        }
        PassmarkCommand::History => {
            let list: Vec<PassMarkChange> = api.get("/passmark/history").await?;
            render::passmark_history(&list, args.json)
        }
        PassmarkCommand::Simulate { changes, since } => {
            anyhow::ensure!(changes.len() % 2 == 0, "simulate takes KEY VALUE pairs");
            let pairs: Vec<(String, String)> = changes
                .chunks(2)
                .map(|c| (c[0].clone(), c[1].clone()))
                .collect();
            let answer: Simulation = api
                .call(
                    reqwest::Method::POST,
                    "/passmark/simulate",
                    serde_json::json!({ "changes": pairs, "since": since }),
                )
                .await?;
            render::simulation(&answer, args.json)
        }
    }
}
