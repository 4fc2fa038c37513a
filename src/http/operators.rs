//! Operator endpoints: the pass mark (show, set, history, simulate), queue
//! controls (cancel, retry, pause, resume). Changes need an operator's token.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::ApiError;
use super::auth::Authenticated;
use crate::domain::passmark::PassMark;
use crate::service::App;
use crate::service::operators::{self, OperatorError, PlatformView, WorkerView};
use crate::service::passmark::{self, PassMarkChange, PassMarkServiceError, Simulation};

pub fn router() -> Router<App> {
    Router::new()
        .route("/passmark", get(show_passmark).put(set_passmark))
        .route("/passmark/history", get(passmark_history))
        .route("/passmark/simulate", post(simulate_passmark))
        .route("/uploads/{id}/cancel", post(cancel_upload))
        .route("/uploads/{id}/retry", post(retry_upload))
        .route("/platforms", get(list_platforms))
        .route("/workers", get(list_workers))
        .route("/platforms/{name}/pause", post(pause_platform))
        .route("/platforms/{name}/resume", post(resume_platform))
}

impl From<PassMarkServiceError> for ApiError {
    fn from(e: PassMarkServiceError) -> Self {
        match e {
            PassMarkServiceError::NotOperator => {
                Self::new(StatusCode::FORBIDDEN, "not_operator", e.to_string())
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
            OperatorError::NotOperator => (StatusCode::FORBIDDEN, "not_operator"),
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

fn require_operator(user: &crate::service::users::User) -> Result<(), ApiError> {
    if user.is_operator {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not_operator",
            "only operators may do this",
        ))
    }
}

async fn show_passmark(
    State(app): State<App>,
    Authenticated(_): Authenticated,
) -> Result<Json<PassMark>, ApiError> {
    Ok(Json(
        passmark::current(&app).await.map_err(ApiError::internal)?,
    ))
}

#[derive(Deserialize)]
struct SetBody {
    key: String,
    value: String,
    why: String,
}

#[derive(serde::Serialize)]
struct SetAnswer {
    change: PassMarkChange,
    passmark: PassMark,
}

async fn set_passmark(
    State(app): State<App>,
    Authenticated(user): Authenticated,
    Json(body): Json<SetBody>,
) -> Result<Json<SetAnswer>, ApiError> {
    let (change, passmark) = passmark::set(&app, &user, &body.key, &body.value, &body.why).await?;
    Ok(Json(SetAnswer { change, passmark }))
}

async fn passmark_history(
    State(app): State<App>,
    Authenticated(_): Authenticated,
) -> Result<Json<Vec<PassMarkChange>>, ApiError> {
    Ok(Json(
        passmark::history(&app).await.map_err(ApiError::internal)?,
    ))
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
    require_operator(&user)?;
    let since = match body.since.as_deref() {
        None => None,
        Some(s) => Some(humantime::parse_duration(s).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("since: {s:?} is not a duration such as 7d: {e}"),
            )
        })?),
    };
    Ok(Json(passmark::simulate(&app, &body.changes, since).await?))
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
) -> Result<Json<serde_json::Value>, ApiError> {
    let retried = operators::retry(&app, &user, id, body.check.as_deref()).await?;
    Ok(Json(serde_json::json!({ "retried": retried })))
}

async fn list_platforms(
    State(app): State<App>,
    Authenticated(_): Authenticated,
) -> Result<Json<Vec<PlatformView>>, ApiError> {
    Ok(Json(
        operators::platforms(&app)
            .await
            .map_err(ApiError::internal)?,
    ))
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
    Authenticated(_): Authenticated,
) -> Result<Json<Vec<WorkerView>>, ApiError> {
    Ok(Json(
        operators::workers(&app).await.map_err(ApiError::internal)?,
    ))
}
