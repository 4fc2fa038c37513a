//! The HTTP API (SPEC section 9): JSON under `/api/v1`, bearer tokens, and
//! one error shape. Handlers parse, call a service, and render.

mod auth;
mod error;
mod stable;
mod uploads;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::service::App;

pub use error::ApiError;

/// Every route of the server.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/healthz", get(health))
        .nest("/api/v1", uploads::router().merge(stable::router()))
        .fallback(not_found)
        .with_state(app)
}

/// Serves the API on `listener` until the process ends.
pub async fn serve(listener: TcpListener, app: App) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(listen = %addr, "serving the API");
    axum::serve(listener, router(app)).await?;
    Ok(())
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "not_found",
        format!("no such endpoint: {}", uri.path()),
    )
}

/// `GET /healthz`: 200 when the database answers.
async fn health(
    axum::extract::State(app): axum::extract::State<App>,
) -> Result<&'static str, ApiError> {
    app.db
        .ping()
        .await
        .map_err(|e| ApiError::internal(anyhow::Error::new(e).context("database ping")))?;
    Ok("ok\n")
}
