//! The HTTP API (SPEC section 9): JSON under `/api/v1`, bearer tokens, and
//! one error shape. Handlers parse, call a service, and render.

mod auth;
mod error;
mod groups;
mod operators;
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
        .route("/metrics", get(metrics))
        .nest(
            "/api/v1",
            uploads::router()
                .merge(groups::router())
                .merge(stable::router())
                .merge(operators::router()),
        )
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

/// `GET /healthz`: 200 when the database and the job queue answer, 503
/// (with which one failed) otherwise.
async fn health(
    axum::extract::State(app): axum::extract::State<App>,
) -> Result<&'static str, ApiError> {
    let unavailable = |what: &str, e: &dyn std::fmt::Display| {
        tracing::warn!(error = %e, "{what} unreachable");
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("the {what} does not answer"),
        )
    };
    app.db
        .ping()
        .await
        .map_err(|e| unavailable("database", &e))?;
    app.queues
        .ping()
        .await
        .map_err(|e| unavailable("job queue", &e))?;
    Ok("ok\n")
}

/// `GET /metrics`: Prometheus text exposition.
async fn metrics(
    axum::extract::State(app): axum::extract::State<App>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let text = crate::service::metrics::render(&app)
        .await
        .map_err(ApiError::internal)?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    )
        .into_response())
}

/// Streams an archive file as `application/gzip`, with its length, a file
/// name, and its sha256 when known (`X-Checksum-Sha256`, as uploads send it).
async fn archive_response(
    path: &std::path::Path,
    file_name: &str,
    sha256: Option<&str>,
) -> Result<axum::response::Response, ApiError> {
    use axum::http::header;
    use axum::response::IntoResponse;
    let file = tokio::fs::File::open(path).await.map_err(|e| {
        ApiError::internal(anyhow::Error::new(e).context(format!("opening {}", path.display())))
    })?;
    let len = file.metadata().await.map(|m| m.len()).ok();
    let mut response =
        axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        "application/gzip".parse().expect("a valid header"),
    );
    if let Some(len) = len {
        headers.insert(header::CONTENT_LENGTH, len.into());
    }
    if let Ok(v) = format!("attachment; filename=\"{file_name}\"").parse() {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Some(sha) = sha256.and_then(|s| s.parse().ok()) {
        headers.insert("x-checksum-sha256", sha);
    }
    Ok(response)
}
