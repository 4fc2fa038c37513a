//! Operator endpoints: the pass mark (show, set, history, simulate), queue
//! controls (cancel, retry, pause, resume). Changes need an operator's token.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use serde::Deserialize;

use super::auth::Authenticated;
use super::{ApiError, Entry, entry};
use crate::domain::passmark::PassMark;
use crate::service::App;
use crate::service::authz::Action;
use crate::service::operators::{self, OperatorError, PlatformView, Retried, WorkerView};
use crate::service::passmark::{
    self, PassMarkChange, PassMarkServiceError, PassMarkSet, Simulation,
};

pub(super) fn routes() -> Vec<Entry> {
    use Action::*;
    vec![
        entry(Method::GET, "/api/v1/passmark", ReadQueue, show_passmark),
        entry(Method::PUT, "/api/v1/passmark", TunePassMark, set_passmark),
        entry(
            Method::GET,
            "/api/v1/passmark/history",
            ReadQueue,
            passmark_history,
        ),
        entry(
            Method::POST,
            "/api/v1/passmark/simulate",
            TunePassMark,
            simulate_passmark,
        ),
        entry(
            Method::POST,
            "/api/v1/uploads/{id}/cancel",
            ControlQueue,
            cancel_upload,
        ),
        entry(
            Method::POST,
            "/api/v1/uploads/{id}/retry",
            ControlQueue,
            retry_upload,
        ),
        entry(Method::GET, "/api/v1/platforms", ReadQueue, list_platforms),
        entry(Method::GET, "/api/v1/workers", ReadQueue, list_workers),
        entry(
            Method::POST,
            "/api/v1/platforms/{name}/pause",
            ControlPlatforms,
            pause_platform,
        ),
        entry(
            Method::POST,
            "/api/v1/platforms/{name}/resume",
            ControlPlatforms,
            resume_platform,
        ),
    ]
}

impl From<PassMarkServiceError> for ApiError {
    fn from(e: PassMarkServiceError) -> Self {
        match e {
            PassMarkServiceError::Denied(d) => d.into(),
            PassMarkServiceError::BadSince(_) => {
                Self::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string())
            }
            PassMarkServiceError::WhyRequired => {
                Self::new(StatusCode::BAD_REQUEST, "why_required", e.to_string())
            }
            PassMarkServiceError::Invalid(_) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_passmark", e.to_string())
            }
            PassMarkServiceError::Internal(e) => Self::internal(e),
        }
    }
}

impl From<OperatorError> for ApiError {
    fn from(e: OperatorError) -> Self {
        let (status, code) = match &e {
            OperatorError::Denied(d) => return d.clone().into(),
            OperatorError::NoSuchUpload(_) | OperatorError::NoSuchPlatform(_) => {
                (StatusCode::NOT_FOUND, "not_found")
            }
            OperatorError::NotPending { .. } | OperatorError::NotChecking(_) => {
                (StatusCode::CONFLICT, "not_pending")
            }
            OperatorError::NoFailedCheck { .. } => (StatusCode::CONFLICT, "no_failed_check"),
            OperatorError::WhyRequired => (StatusCode::BAD_REQUEST, "why_required"),
            OperatorError::Internal(_) => {
                let OperatorError::Internal(err) = e else {
                    unreachable!()
                };
                return Self::internal(err);
            }
        };
        Self::new(status, code, e.to_string())
    }
}

async fn show_passmark(
    State(app): State<App>,
    Authenticated(user): Authenticated,
) -> Result<Json<PassMark>, ApiError> {
    Ok(Json(passmark::show(&app, &user).await?))
}

#[derive(Deserialize)]
struct SetBody {
    key: String,
    value: String,
    why: String,
}

async fn set_passmark(
    State(app): State<App>,
    Authenticated(user): Authenticated,
    Json(body): Json<SetBody>,
) -> Result<Json<PassMarkSet>, ApiError> {
    let (change, passmark) = passmark::set(&app, &user, &body.key, &body.value, &body.why).await?;
    Ok(Json(PassMarkSet { change, passmark }))
}

async fn passmark_history(
    State(app): State<App>,
    Authenticated(user): Authenticated,
) -> Result<Json<Vec<PassMarkChange>>, ApiError> {
    Ok(Json(passmark::history(&app, &user).await?))
}

#[derive(Deserialize)]
struct SimulateBody {
    /// `[["threshold", "0.5"], ...]`
    changes: Vec<(String, String)>,
    /// e.g. "7d"; all verdicts when absent.
    since: Option<String>,
}

async fn simulate_passmark(
    State(app): State<App>,
    Authenticated(user): Authenticated,
    Json(body): Json<SimulateBody>,
) -> Result<Json<Simulation>, ApiError> {
    Ok(Json(
        passmark::simulate(&app, &user, &body.changes, body.since.as_deref()).await?,
    ))
}

#[derive(Deserialize)]
struct CancelBody {
    why: String,
}

async fn cancel_upload(
    State(app): State<App>,
    Authenticated(user): Authenticated,
    Path(id): Path<i64>,
    Json(body): Json<CancelBody>,
) -> Result<StatusCode, ApiError> {
    operators::cancel(&app, &user, id, &body.why).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct RetryBody {
    check: Option<String>,
}

async fn retry_upload(
    State(app): State<App>,
    Authenticated(user): Authenticated,
    Path(id): Path<i64>,
    Json(body): Json<RetryBody>,
) -> Result<Json<Retried>, ApiError> {
    let retried = operators::retry(&app, &user, id, body.check.as_deref()).await?;
    Ok(Json(Retried { retried }))
}

async fn list_platforms(
    State(app): State<App>,
    Authenticated(user): Authenticated,
) -> Result<Json<Vec<PlatformView>>, ApiError> {
    Ok(Json(operators::platforms(&app, &user).await?))
}

async fn pause_platform(
    State(app): State<App>,
    Authenticated(user): Authenticated,
    Path(name): Path<String>,
) -> Result<Json<PlatformView>, ApiError> {
    Ok(Json(operators::set_paused(&app, &user, &name, true).await?))
}

async fn resume_platform(
    State(app): State<App>,
    Authenticated(user): Authenticated,
    Path(name): Path<String>,
) -> Result<Json<PlatformView>, ApiError> {
    Ok(Json(
        operators::set_paused(&app, &user, &name, false).await?,
    ))
}

/// `GET /workers`: the check workers seen in the last minute.
async fn list_workers(
    State(app): State<App>,
    Authenticated(user): Authenticated,
) -> Result<Json<Vec<WorkerView>>, ApiError> {
    Ok(Json(operators::workers(&app, &user).await?))
}
