//! The stable repository, readable without a token: `GET /index`,
//! `GET /packages/{name}`, `GET /packages/{name}/{version}/archive`.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::ApiError;
use crate::service::App;
use crate::service::stable::{self, PackageView, StableError};

pub fn router() -> Router<App> {
    Router::new()
        .route("/index", get(show_index))
        .route("/packages/{name}", get(show_package))
        .route("/packages/{name}/{version}/archive", get(download_archive))
}

impl From<StableError> for ApiError {
    fn from(e: StableError) -> Self {
        match e {
            StableError::Internal(e) => ApiError::internal(e),
            e => ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string()),
        }
    }
}

/// The published index file, exactly as on disk (what mirrors copy).
async fn show_index(State(app): State<App>) -> Result<Response, ApiError> {
    let bytes = match tokio::fs::read(app.stable.index_path()).await {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            br#"{"serial":0,"packages":{}}"#.to_vec()
        }
        Err(e) => {
            return Err(ApiError::internal(
                anyhow::Error::new(e).context("reading the index"),
            ));
        }
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}

async fn show_package(
    State(app): State<App>,
    Path(name): Path<String>,
) -> Result<Json<PackageView>, ApiError> {
    Ok(Json(stable::package(&app, &name).await?))
}

async fn download_archive(
    State(app): State<App>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let path = stable::archive(&app, &name, &version).await?;
    let file = tokio::fs::File::open(&path).await.map_err(|e| {
        ApiError::internal(anyhow::Error::new(e).context(format!("opening {}", path.display())))
    })?;
    let len = file.metadata().await.map(|m| m.len()).ok();
    let mut response = Body::from_stream(tokio_util::io::ReaderStream::new(file)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        "application/gzip".parse().expect("a valid header"),
    );
    if let Some(len) = len {
        headers.insert(header::CONTENT_LENGTH, len.into());
    }
    if let Ok(v) = format!("attachment; filename=\"{name}-{version}.tar.gz\"").parse() {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}
