//! The testing channel: `GET /testing/index` and
//! `GET /testing/{name}/{version}/archive`, the latter marked with the
//! `Holdq-Unchecked` header.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::Response;

use super::auth::Authenticated;
use super::{ApiError, Entry, entry};
use crate::service::App;
use crate::service::authz::Action;
use crate::service::testing::{self, TestingError, TestingIndex};

/// The header every download from the testing channel carries.
pub const UNCHECKED_HEADER: &str = "holdq-unchecked";

pub(super) fn routes() -> Vec<Entry> {
    vec![
        entry(
            Method::GET,
            "/api/v1/testing/index",
            Action::ReadQueue,
            show_testing_index,
        ),
        entry(
            Method::GET,
            "/api/v1/testing/{name}/{version}/archive",
            Action::ReadQueue,
            download_unchecked_archive,
        ),
    ]
}

impl From<TestingError> for ApiError {
    fn from(e: TestingError) -> Self {
        match e {
            TestingError::Denied(d) => d.into(),
            TestingError::Internal(e) => ApiError::internal(e),
            e => ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string()),
        }
    }
}

async fn show_testing_index(
    State(app): State<App>,
    Authenticated(user): Authenticated,
) -> Result<Json<TestingIndex>, ApiError> {
    Ok(Json(testing::index(&app, Some(&user)).await?))
}

async fn download_unchecked_archive(
    State(app): State<App>,
    Authenticated(user): Authenticated,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (path, found) = testing::archive(&app, Some(&user), &name, &version).await?;
    let file_name = format!("{name}-{version}.tar.gz");
    let mut response = super::archive_response(&path, &file_name, Some(&found.sha256)).await?;
    let warning = format!("{} (upload {})", testing::UNCHECKED, found.upload);
    response.headers_mut().insert(
        UNCHECKED_HEADER,
        HeaderValue::from_str(&warning).expect("ASCII text is a header"),
    );
    Ok(response)
}
