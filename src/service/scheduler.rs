//! What runs in the background of a server or a worker process: the
//! scheduler that takes uploads out of the queue in arrival order, the
//! platform workers, and the reconcile sweep that re-enqueues checks whose
//! job was lost and decides uploads whose last check finished unseen.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{App, checks, faults, notify, verdict};
use crate::config::PlatformConfig;
use crate::db;
use crate::domain::check::CheckState;
use crate::jobs::worker_name;

/// How often the sweep runs even when nothing wakes it.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Starts the scheduler and sweep (a server's duty).
pub fn spawn_scheduler(app: &App, shutdown: CancellationToken) -> JoinHandle<()> {
    let app = app.clone();
    tokio::spawn(async move {
        let mut last_sweep = std::time::Instant::now() - SWEEP_EVERY;
        loop {
            if let Err(e) = checks::start_queued(&app).await {
                tracing::error!(error = format!("{e:#}"), "cannot start queued uploads");
            }
            if let Err(e) = notify::push_due(&app).await {
                tracing::error!(error = format!("{e:#}"), "cannot enqueue due emails");
            }
            if last_sweep.elapsed() >= SWEEP_EVERY {
                if let Err(e) = reconcile(&app).await {
                    tracing::error!(error = format!("{e:#}"), "reconcile sweep failed");
                }
                last_sweep = std::time::Instant::now();
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = app.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    })
}

/// Starts `count` workers for `platform`.
pub fn spawn_workers(
    app: &App,
    platform: &PlatformConfig,
    count: u32,
    shutdown: CancellationToken,
) -> Vec<JoinHandle<()>> {
    (0..count)
        .map(|i| {
            let name = worker_name(platform.name.as_str(), i);
            let app = app.clone();
            let platform = platform.name.to_string();
            let shutdown = shutdown.clone();
            let handler = check_handler(&app, &name);
            tokio::spawn(async move {
                tracing::info!(worker = %name, check.platform = %platform, "worker started");
                let beating = spawn_heartbeat(&app, &name, &platform, shutdown.clone());
                if let Err(e) = app
                    .queues
                    .clone()
                    .run_check_worker(platform.clone(), name.clone(), handler, shutdown)
                    .await
                {
                    tracing::error!(worker = %name, error = format!("{e:#}"), "worker stopped");
                }
                beating.abort();
            })
        })
        .collect()
}

/// What a platform worker does with a job: runs the platform's checks of
/// the upload. A job that fails for a reason not the package's (an
/// infrastructure error) is done with: its checks go back to pending and
/// get a new job after a backoff (`faults`), never a hot loop of apalis
/// attempts; a worker failing so again and again pauses between jobs.
fn check_handler(app: &App, name: &str) -> crate::jobs::Handler<crate::jobs::RunCheck> {
    let (app, name) = (app.clone(), name.to_owned());
    let consecutive = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    crate::jobs::Handler(std::sync::Arc::new(move |job: crate::jobs::RunCheck| {
        let (app, name, consecutive) = (app.clone(), name.clone(), consecutive.clone());
        Box::pin(async move {
            use std::sync::atomic::Ordering;
            registry_set_current(&app, &name, Some(job.check_id)).await;
            let result = checks::run_platform(&app, job.check_id, &name).await;
            registry_set_current(&app, &name, None).await;
            let Err(e) = result else {
                consecutive.store(0, Ordering::Relaxed);
                return Ok(());
            };
            if let Err(recording) = faults::record(&app, job.check_id, &name, &e).await {
                // Not even recorded (the database is away): apalis retries.
                tracing::error!(
                    check.id = job.check_id,
                    error = format!("{e:#}"),
                    recording = format!("{recording:#}"),
                    "check could not run, and that could not be recorded"
                );
                return Err(e);
            }
            let n = consecutive.fetch_add(1, Ordering::Relaxed) + 1;
            let pause = faults::worker_pause(n);
            if !pause.is_zero() {
                tracing::debug!(worker = %name, failures = n, pause_s = pause.as_secs(), "worker pauses before its next job");
                tokio::time::sleep(pause).await;
            }
            Ok(())
        })
    }))
}

/// How often a worker renews its row in the registry.
const REGISTRY_BEAT: Duration = Duration::from_secs(5);

/// Registers the worker and renews its heartbeat until `shutdown`.
fn spawn_heartbeat(
    app: &App,
    name: &str,
    platform: &str,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let (app, name, platform) = (app.clone(), name.to_owned(), platform.to_owned());
    tokio::spawn(async move {
        let host = crate::jobs::host_name();
        loop {
            let result = async {
                let mut conn = app.db.pool().acquire().await?;
                db::workers::register(
                    &mut conn,
                    &name,
                    &platform,
                    &host,
                    i64::from(std::process::id()),
                )
                .await
            }
            .await;
            if let Err(e) = result {
                tracing::warn!(worker = %name, error = %e, "heartbeat not recorded");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(REGISTRY_BEAT) => {}
            }
        }
    })
}

async fn registry_set_current(app: &App, name: &str, check: Option<i64>) {
    let result = async {
        let mut conn = app.db.pool().acquire().await?;
        db::workers::set_current(&mut conn, name, check).await
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(worker = %name, error = %e, "worker registry not updated");
    }
}

/// Re-enqueues the build checks that should have a job, decides uploads
/// whose checks are all final, and fills in index documents written
/// before they moved into the database.
pub async fn reconcile(app: &App) -> anyhow::Result<()> {
    super::index::write_unwritten(app).await?;
    super::changes::prune(app).await?;
    super::groups::expire(app).await?;
    super::tus::sweep(app).await?;
    let (builds, checking) = {
        let mut conn = app.db.pool().acquire().await?;
        (
            db::checks::unfinished_builds(&mut conn).await?,
            db::uploads::checking_ids(&mut conn).await?,
        )
    };
    push_builds(app, builds).await?;
    for upload_id in checking {
        verdict::decide(app, upload_id).await?;
    }
    Ok(())
}

/// Gives a job to every build check that should have one (its platform has
/// a check left to run), unless it has one already (the key says so).
pub async fn push_unfinished(app: &App) -> anyhow::Result<()> {
    let builds = {
        let mut conn = app.db.pool().acquire().await?;
        db::checks::unfinished_builds(&mut conn).await?
    };
    push_builds(app, builds).await
}

async fn push_builds(app: &App, builds: Vec<db::checks::UnfinishedBuild>) -> anyhow::Result<()> {
    for b in builds {
        // A pending check gets a job unless it has one (the key says so): a
        // job lost between commit and push, or one that ended without
        // starting the check, has a successor. A running one is left to its
        // worker (apalis re-queues the job of a worker that stops beating)
        // until it has run for its platform's time limit and two minutes.
        let limit = app
            .config
            .platform(&b.platform)
            .map(|p| p.timeout)
            .unwrap_or(Duration::from_secs(900));
        let stale = b.started_at.is_some_and(|t| {
            db::now_ms() - t > (limit + Duration::from_secs(120)).as_millis() as i64
        });
        // A platform whose build is done and whose next check has not yet
        // started is left a moment to its job, which is between the two.
        let between = b
            .build_finished_at
            .is_some_and(|t| db::now_ms() - t < 30_000);
        // One waiting after an infrastructure error runs again when due.
        let due = b.retry_at.is_none_or(|t| t <= db::now_ms());
        if (b.state == CheckState::Pending && !between && due) || stale {
            checks::enqueue_check(app, &b.platform, b.id, b.attempts, b.start_failures).await?;
        }
    }
    Ok(())
}

/// Starts the worker that delivers the outbox.
pub fn spawn_email_worker(app: &App, shutdown: CancellationToken) -> JoinHandle<()> {
    spawn_queue_worker(
        app,
        crate::jobs::MAIL_QUEUE,
        "mail",
        shutdown,
        |app, job: crate::jobs::SendEmail| {
            Box::pin(async move { notify::deliver(&app, job.outbox_id).await })
        },
    )
}

/// Starts the worker that decides uploads whose last checks ran on a
/// worker of another machine (a server's duty: it owns stable storage).
pub fn spawn_decide_worker(app: &App, shutdown: CancellationToken) -> JoinHandle<()> {
    spawn_queue_worker(
        app,
        crate::jobs::DECIDE_QUEUE,
        "decide",
        shutdown,
        |app, job: crate::jobs::Decide| {
            Box::pin(async move { verdict::decide(&app, job.upload_id).await.map(|_| ()) })
        },
    )
}

/// Starts one worker on `queue` running `work` for each job until `shutdown`.
fn spawn_queue_worker<J: crate::jobs::Job>(
    app: &App,
    queue: &'static str,
    label: &'static str,
    shutdown: CancellationToken,
    work: fn(App, J) -> futures::future::BoxFuture<'static, anyhow::Result<()>>,
) -> JoinHandle<()> {
    let name = worker_name(label, 0);
    let handler_app = app.clone();
    let handler = crate::jobs::Handler(std::sync::Arc::new(move |job: J| {
        work(handler_app.clone(), job)
    }));
    let queues = app.queues.clone();
    tokio::spawn(async move {
        if let Err(e) = queues
            .run_worker(queue.to_owned(), name.clone(), handler, shutdown)
            .await
        {
            tracing::error!(worker = %name, error = format!("{e:#}"), "{label} worker stopped");
        }
    })
}
