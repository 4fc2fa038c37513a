//! The stable index for consumers and followers, readable without a token:
//! `GET /index` (streamed from one snapshot), `GET /index/{name}` (one
//! package's document, with an `ETag`), `GET /changes?since=N`, and
//! `GET /snapshot`.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{ApiError, Entry, entry};
use crate::domain::PackageName;
use crate::service::App;
use crate::service::authz::Action;
use crate::service::changes::{self, ChangesError, ChangesPage};

pub(super) fn routes() -> Vec<Entry> {
    vec![
        entry(
            Method::GET,
            "/api/v1/index",
            Action::ReadStable,
            stream_index,
        ),
        entry(
            Method::GET,
            "/api/v1/index/{name}",
            Action::ReadStable,
            show_document,
        ),
        entry(
            Method::GET,
            "/api/v1/changes",
            Action::ReadStable,
            list_changes,
        ),
        entry(
            Method::GET,
            "/api/v1/snapshot",
            Action::ReadStable,
            stream_index,
        ),
    ]
}

impl From<ChangesError> for ApiError {
    fn from(e: ChangesError) -> Self {
        let (status, code) = match &e {
            ChangesError::Gone { .. } => (StatusCode::GONE, "gone"),
            ChangesError::Ahead { .. } | ChangesError::BadLimit(_) => {
                (StatusCode::BAD_REQUEST, "bad_request")
            }
            ChangesError::Internal(_) => {
                let ChangesError::Internal(e) = e else {
                    unreachable!()
                };
                return ApiError::internal(e);
            }
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// `GET /index` and `GET /snapshot`: every package's document and the
/// serial they are at, from one database snapshot, streamed.
async fn stream_index(State(app): State<App>) -> Response {
    let pieces = changes::stream(&app);
    let body = futures::stream::unfold(pieces, |mut rx| async move {
        rx.recv()
            .await
            .map(|piece| (piece.map_err(std::io::Error::other), rx))
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        axum::body::Body::from_stream(body),
    )
        .into_response()
}

/// `GET /index/{name}`: the package's document as stored, with its
/// sha256 as `ETag`; `304 Not Modified` when `If-None-Match` names it.
async fn show_document(
    State(app): State<App>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if PackageName::parse(&name).is_err() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no stable package {name:?}: not a package name"),
        ));
    }
    let (serial, document) = crate::service::index::stored(&app, &name)
        .await
        .map_err(ApiError::internal)?;
    let Some(document) = document else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no stable package {name:?}"),
        ));
    };
    let etag = format!("\"{}\"", document.sha256);
    let mut response = if if_none_match(&headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, "application/json")], document.body).into_response()
    };
    let headers = response.headers_mut();
    headers.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).expect("hex is a header"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-holdq-serial", serial.into());
    Ok(response)
}

/// Whether `If-None-Match` names `etag` (or is `*`); weak tags compare by
/// their value.
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == etag)
}

/// `GET /changes?since=N[&limit=K][&wait=SECONDS]`.
async fn list_changes(
    State(app): State<App>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Json<ChangesPage>, ApiError> {
    let number = |key: &str, default: Option<i64>| -> Result<i64, ApiError> {
        match q.get(key) {
            Some(v) => v.parse().map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("{key} must be a whole number, not {v:?}"),
                )
            }),
            None => default.ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("{key} is required (the serial you last saw; 0 for all)"),
                )
            }),
        }
    };
    let since = number("since", None)?;
    let limit = number("limit", Some(100))?;
    let wait = number("wait", Some(0))?;
    let page = if wait > 0 {
        changes::wait(&app, since, limit, Duration::from_secs(wait as u64)).await?
    } else {
        changes::list(&app, since, limit).await?
    };
    Ok(Json(page))
}
