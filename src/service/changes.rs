//! What followers of the stable repository read (SPEC section 10): the
//! changes log after a serial, paged and long-polled, pruned to an age;
//! and the whole index from one database snapshot, streamed, to start
//! again from when the log no longer reaches back far enough.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::index::Touched;
use super::{App, format_time};
use crate::db;

/// One stable change as `GET /api/v1/changes` lists it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChangeView {
    pub serial: i64,
    pub kind: String,
    pub at: String,
    /// The packages whose documents it changed, with their new sha256
    /// (the `ETag` of `GET /api/v1/index/{name}`; null: the document went).
    pub packages: Vec<Touched>,
}

/// A page of the changes log.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChangesPage {
    /// The serial the published index is at.
    pub serial: i64,
    pub changes: Vec<ChangeView>,
    /// Whether more changes follow the last one listed.
    pub more: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ChangesError {
    #[error(
        "the changes after serial {since} are no longer kept (the log starts after {kept_from}); start again from GET /api/v1/snapshot"
    )]
    Gone { since: i64, kept_from: i64 },
    #[error("serial {since} is ahead of this server's stable serial {serial}")]
    Ahead { since: i64, serial: i64 },
    #[error("limit must be between 1 and {MAX_LIMIT}, not {0}")]
    BadLimit(i64),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for ChangesError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(e.into())
    }
}

pub const MAX_LIMIT: i64 = 1000;
/// The longest a long-poll waits.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// How often a long-poll looks again when no notification comes (another
/// server on SQLite's file, or a lost notification).
const POLL: Duration = Duration::from_secs(1);

/// The changes after `since`, at most `limit` (each one's documents are
/// stored with it, so every one listed can be read).
pub async fn list(app: &App, since: i64, limit: i64) -> Result<ChangesPage, ChangesError> {
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ChangesError::BadLimit(limit));
    }
    let mut tx = app.db.begin_read().await?;
    let serial = db::stable::serial(&mut tx).await?;
    if since > serial {
        return Err(ChangesError::Ahead { since, serial });
    }
    let mut rows = db::changes::after(&mut tx, since, limit + 1).await?;
    let oldest = db::changes::oldest(&mut tx).await?;
    tx.commit().await?;
    if since < serial && rows.first().is_none_or(|c| c.serial != since + 1) {
        return Err(ChangesError::Gone {
            since,
            kept_from: oldest.map_or(serial, |o| o - 1),
        });
    }
    rows.retain(|c| c.serial <= serial);
    let more = rows.len() as i64 > limit || rows.last().is_some_and(|c| c.serial < serial);
    rows.truncate(limit as usize);
    let changes = rows
        .into_iter()
        .map(|c| {
            Ok(ChangeView {
                packages: serde_json::from_str(&c.packages).map_err(anyhow::Error::new)?,
                serial: c.serial,
                kind: c.kind,
                at: format_time(c.at),
            })
        })
        .collect::<Result<_, ChangesError>>()?;
    Ok(ChangesPage {
        serial,
        changes,
        more,
    })
}

/// [`list`], waiting up to `wait` for a change when there is none yet.
pub async fn wait(
    app: &App,
    since: i64,
    limit: i64,
    wait: Duration,
) -> Result<ChangesPage, ChangesError> {
    let deadline = tokio::time::Instant::now() + wait.min(MAX_WAIT);
    let mut moved = app.stable_serial.subscribe();
    loop {
        moved.borrow_and_update();
        let page = list(app, since, limit).await?;
        let now = tokio::time::Instant::now();
        if !page.changes.is_empty() || now >= deadline {
            return Ok(page);
        }
        let nap = (deadline - now).min(POLL);
        let _ = tokio::time::timeout(nap, moved.changed()).await;
    }
}

/// Tells this process's long-polls, and the other servers', that the
/// index is published at `serial`.
pub async fn announce(app: &App, serial: i64) {
    let moved = app.stable_serial.send_if_modified(|s| {
        let newer = serial > *s;
        if newer {
            *s = serial;
        }
        newer
    });
    // Not again for a serial this process already announced (the sweep
    // publishes, usually finding nothing to do).
    if moved && app.db.backend() == db::Backend::Postgres {
        let sent = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(db::STABLE_CHANNEL)
            .bind(serial.to_string())
            .execute(app.db.pool())
            .await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, stable.serial = serial, "other servers not told of the new serial; they poll");
        }
    }
}

/// Wakes this process's long-polls when another server announces a serial,
/// for as long as the process lives.
pub fn follow(app: &App) {
    let mut heard = app.queues.stable_serials();
    let watch = app.stable_serial.clone();
    tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match heard.recv().await {
                Ok(serial) => {
                    watch.send_if_modified(|s| {
                        let newer = serial > *s;
                        *s = (*s).max(serial);
                        newer
                    });
                }
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return,
            }
        }
    });
}

/// Deletes the changes older than `[index] changes_kept`; returns how many.
pub async fn prune(app: &App) -> anyhow::Result<u64> {
    let kept = i64::try_from(app.config.index.changes_kept.as_millis()).unwrap_or(i64::MAX);
    let mut tx = app.db.begin_write().await?;
    let pruned = db::changes::prune(&mut tx, db::now_ms().saturating_sub(kept)).await?;
    tx.commit().await?;
    if pruned > 0 {
        tracing::info!(pruned, "old stable changes pruned");
    }
    Ok(pruned)
}

/// Packages read per query while streaming the whole index.
const STREAM_PAGE: i64 = 256;

/// The whole stable index, `{"serial": N, "packages": {NAME: document...}}`,
/// read from one database snapshot and sent in pieces as it is read (never
/// built whole in memory). An error after the first piece ends the stream,
/// which the reader sees as a truncated body.
pub fn stream(app: &App) -> tokio::sync::mpsc::Receiver<anyhow::Result<bytes::Bytes>> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let app = app.clone();
    tokio::spawn(async move {
        if let Err(e) = stream_into(&app, &tx).await {
            tracing::warn!(error = %format!("{e:#}"), "streaming the stable index failed");
            let _ = tx.send(Err(e)).await;
        }
    });
    rx
}

async fn stream_into(
    app: &App,
    out: &tokio::sync::mpsc::Sender<anyhow::Result<bytes::Bytes>>,
) -> anyhow::Result<()> {
    let mut snapshot = app.db.begin_read().await?;
    let serial = db::stable::serial(&mut snapshot).await?;
    let mut piece = format!("{{\"serial\":{serial},\"packages\":{{").into_bytes();
    let mut after = String::new();
    let mut first = true;
    let mirrored = super::mirror::primary_of(app).is_some();
    loop {
        // A follower serves its primary's documents as they came.
        let page = if mirrored {
            db::mirror::documents_after(&mut snapshot, &after, STREAM_PAGE).await?
        } else {
            db::stable::documents_after(&mut snapshot, &after, STREAM_PAGE).await?
        };
        let Some(last) = page.last() else { break };
        after = last.name.clone();
        for d in page {
            if !std::mem::take(&mut first) {
                piece.push(b',');
            }
            piece.extend(serde_json::to_vec(&d.name)?);
            piece.push(b':');
            piece.extend(d.body.as_bytes());
        }
        if out
            .send(Ok(std::mem::take(&mut piece).into()))
            .await
            .is_err()
        {
            return Ok(()); // the reader went away
        }
    }
    snapshot.commit().await?;
    piece.extend(b"}}");
    let _ = out.send(Ok(piece.into())).await;
    Ok(())
}
