//! The one assembly of what a server runs beside its HTTP API: the
//! start-up reconcile, the scheduler, the platform workers, the decide
//! worker, the mail worker and the drop-box watcher; or, on a follower, the mirror's sync. `holdq serve` and the test harness both start
//! a server through [`start`], so the two cannot drift apart.

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{App, scheduler};

/// The background work of a running server.
#[derive(Debug)]
pub struct Background {
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

/// Finishes what a crash interrupted (the reconcile sweep), then starts the
/// scheduler, the mail and decide workers and every platform's local
/// workers. Dropping the result leaves them running until the runtime ends;
/// [`Background::stop`] stops them.
pub async fn start(app: &App) -> anyhow::Result<Background> {
    let shutdown = CancellationToken::new();
    if let Some(primary) = super::mirror::primary_of(app) {
        // A follower checks nothing and sends no mail: it only follows.
        let follower = super::mirror::Follower::new(app, primary)?;
        tracing::info!(mirror.primary = %primary, "following the primary as a read-only mirror");
        let tasks = vec![tokio::spawn(follower.run(shutdown.clone()))];
        return Ok(Background { shutdown, tasks });
    }
    scheduler::reconcile(app).await?;
    let mut tasks = vec![
        scheduler::spawn_scheduler(app, shutdown.clone()),
        scheduler::spawn_email_worker(app, shutdown.clone()),
        scheduler::spawn_decide_worker(app, shutdown.clone()),
    ];
    tasks.extend(super::dropbox::spawn(app, shutdown.clone()));
    for platform in &app.config.platforms {
        tasks.extend(scheduler::spawn_workers(
            app,
            platform,
            platform.local_workers,
            shutdown.clone(),
        ));
    }
    Ok(Background { shutdown, tasks })
}

impl Background {
    /// Asks every task to stop and waits until they have.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
