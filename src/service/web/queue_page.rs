//! The queue page (`/` and `/queue`): the holding queue in order with what
//! each upload waits for (`service::queue::list_queue`, under the same
//! policy as `GET /api/v1/queue`), the latest verdicts, and "my uploads".

use serde::Serialize;

use crate::db;
use crate::service::App;
use crate::service::authz::Viewer;
use crate::service::format_time;
use crate::service::queue::{self, QueueError, UploadView};

/// Verdicts shown under the queue.
const RECENT: i64 = 20;

#[derive(Clone, Debug, Serialize)]
pub struct QueuePage {
    pub uploads: Vec<UploadView>,
    pub recent: Vec<Recent>,
    /// Only the visitor's own uploads are shown.
    pub mine: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Recent {
    pub id: i64,
    pub name: String,
    pub version: String,
    pub state: String,
    pub at: String,
}

/// The queue as `viewer` may see it; with `mine`, only their uploads.
pub async fn queue_page(
    app: &App,
    viewer: Viewer<'_>,
    mine: bool,
) -> Result<QueuePage, QueueError> {
    let mut uploads = queue::list_queue(&app.db, viewer, None).await?;
    let me = viewer.user.filter(|_| mine).map(|u| u.id);
    let mut conn = app.db.pool().acquire().await?;
    if let Some(me) = me {
        let own = db::web::pending_of_uploader(&mut conn, me).await?;
        uploads.retain(|u| own.contains(&u.id));
    }
    let recent = db::web::recent_verdicts(&mut conn, me, RECENT)
        .await?
        .into_iter()
        .map(|r| Recent {
            id: r.id,
            name: r.name,
            version: r.version,
            state: r.state,
            at: format_time(r.updated_at),
        })
        .collect();
    Ok(QueuePage {
        uploads,
        recent,
        mine: me.is_some(),
    })
}
