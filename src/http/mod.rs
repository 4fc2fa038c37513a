//! The HTTP API (SPEC section 9): JSON under `/api/v1`, bearer tokens, and
//! one error shape. Handlers parse, call a service, and render.

mod auth;
mod error;
mod groups;
mod index;
mod mirror;
mod operators;
mod stable;
mod testing;
mod uploads;

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
    all.extend(index::routes());
    all.extend(testing::routes());
    all.extend(mirror::routes());
    all.extend(operators::routes());
    all
}

/// Every route of the server with the action that guards it.
pub fn routes() -> Vec<Route> {
    entries().into_iter().map(|e| e.route).collect()
}

/// The server's router: every route of [`routes`], and a 404 for the rest.
pub fn router(app: App) -> Router {
    entries()
        .into_iter()
        .fold(Router::new(), |router, e| {
            router.route(e.route.path, e.handler)
        })
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            mirror::refuse_writes,
        ))
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
