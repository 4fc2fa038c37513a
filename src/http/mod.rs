//! The HTTP API (SPEC section 9): JSON under `/api/v1`, bearer tokens, and
//! one error shape. Handlers parse, call a service, and render.

mod auth;
mod error;
mod groups;
mod index;
mod listener;
mod mirror;
mod operators;
mod slots;
mod stable;
mod testing;
mod tus;
mod uploads;
mod web;

use axum::Router;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter};
use tokio::net::TcpListener;

use crate::service::App;
use crate::service::authz::Action;

pub use error::ApiError;

/// A route of the server and the action of the authorization policy
/// (`service::authz`) that decides who may call it.
#[derive(Clone, Debug)]
pub struct Route {
    pub method: Method,
    /// As axum writes it, e.g. `/api/v1/uploads/{id}`.
    pub path: &'static str,
    pub action: Action,
}

/// A route with its handler: the router is built from these only, so no
/// route exists without a policy decision.
struct Entry {
    route: Route,
    handler: MethodRouter<App>,
}

/// A route `method path` handled by `handler`, which asks the policy about
/// `action`.
fn entry<H, T>(method: Method, path: &'static str, action: Action, handler: H) -> Entry
where
    H: Handler<T, App>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).expect("a method axum routes");
    Entry {
        route: Route {
            method,
            path,
            action,
        },
        handler: axum::routing::on(filter, handler),
    }
}

fn entries() -> Vec<Entry> {
    let mut all = vec![
        entry(Method::GET, "/healthz", Action::Monitor, health),
        entry(Method::GET, "/metrics", Action::Monitor, metrics),
    ];
    all.extend(uploads::routes());
    all.extend(groups::routes());
    all.extend(stable::routes());
    all.extend(tus::routes());
    all.extend(index::routes());
    all.extend(testing::routes());
    all.extend(mirror::routes());
    all.extend(operators::routes());
    all.extend(web::routes());
    all
}

/// Every route of the server with the action that guards it.
pub fn routes() -> Vec<Route> {
    entries().into_iter().map(|e| e.route).collect()
}

/// The server's router: every route of [`routes`], and a 404 for the rest.
pub fn router(app: App) -> Router {
    let slots = slots::UploadSlots::new(app.config.server.uploads_per_user);
    entries()
        .into_iter()
        .fold(Router::new(), |router, e| {
            router.route(e.route.path, e.handler)
        })
        .fallback(not_found)
        .layer(axum::Extension(slots))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            mirror::refuse_writes,
        ))
        .with_state(app)
}

/// Serves the API on `listener` until the process ends, with at most
/// `[server] max_connections` connections open at once, each closed after
/// `[server] idle_timeout` without traffic.
pub async fn serve(listener: TcpListener, app: App) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let max = app.config.server.max_connections as usize;
    tracing::info!(listen = %addr, server.max_connections = max, "serving the API");
    let idle = app.config.server.idle_timeout;
    let listener = listener::CappedListener::new(listener, max, idle);
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

/// `GET /healthz`: 503 (with which one failed) when the database or the
/// job queue does not answer; otherwise 200 with `ok`, or with `degraded:`
/// and why when the data directory is below its free-space reserve (the
/// server still serves reads and checks, but refuses uploads).
async fn health(axum::extract::State(app): axum::extract::State<App>) -> Result<String, ApiError> {
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
    let reserve = app.config.storage.reserve;
    let space = app
        .storage
        .space(reserve.0)
        .map_err(|e| unavailable("data directory", &e))?;
    if space.is_low() {
        return Ok(format!(
            "degraded: the data directory {} has {} bytes free, below the reserve of {reserve}; uploads are refused until space is freed\n",
            app.storage.root().display(),
            space.available,
        ));
    }
    Ok("ok\n".into())
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
