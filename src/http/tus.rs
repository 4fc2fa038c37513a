//! Resumable uploads, tus 1.0 (core, creation, checksum, termination,
//! expiration) under `/api/v1/tus/`: `OPTIONS` discovery, `POST` to
//! create, `HEAD` for the offset, `PATCH` to append, `DELETE` to end, and
//! `GET /api/v1/tus` listing one's unfinished uploads (holdq's own).

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::auth::Authenticated;
use super::{ApiError, Entry, entry};
use crate::domain::tus as protocol;
use crate::service::App;
use crate::service::authz::Action;
use crate::service::tus::{self, Appended, TusError, TusUpload};

pub(super) fn routes() -> Vec<Entry> {
    let a = Action::ResumeUploads;
    let mut all = Vec::new();
    // Clients differ on the trailing slash of the creation URL.
    for path in ["/api/v1/tus", "/api/v1/tus/"] {
        // Discovery tells what the server speaks, to anyone (as `/healthz`).
        all.push(entry(Method::OPTIONS, path, Action::Monitor, discover));
        all.push(entry(Method::POST, path, a, create_upload));
    }
    all.push(entry(Method::GET, "/api/v1/tus", a, list_uploads));
    all.push(entry(Method::HEAD, "/api/v1/tus/{id}", a, show_offset));
    all.push(entry(Method::PATCH, "/api/v1/tus/{id}", a, append_chunk));
    all.push(entry(
        Method::DELETE,
        "/api/v1/tus/{id}",
        a,
        terminate_upload,
    ));
    all.push(entry(
        Method::OPTIONS,
        "/api/v1/tus/{id}",
        Action::Monitor,
        discover,
    ));
    for e in all.iter_mut().filter(|e| e.route.method != Method::OPTIONS) {
        let handler = std::mem::take(&mut e.handler);
        e.handler = handler.layer(axum::middleware::map_response(resumable_header));
    }
    all
}

/// `Tus-Resumable` on every response (errors included) of every tus
/// route but OPTIONS, and `Tus-Version` on a 412.
async fn resumable_header(mut response: Response) -> Response {
    if response.status() == StatusCode::PRECONDITION_FAILED {
        response
            .headers_mut()
            .insert("tus-version", HeaderValue::from_static(protocol::VERSION));
    }
    response
        .headers_mut()
        .insert("tus-resumable", HeaderValue::from_static(protocol::VERSION));
    response
}

/// `OPTIONS`: the version, extensions, largest upload and checksums.
async fn discover(State(app): State<App>) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert("tus-version", HeaderValue::from_static(protocol::VERSION));
    headers.insert(
        "tus-extension",
        HeaderValue::from_static(protocol::EXTENSIONS),
    );
    headers.insert("tus-max-size", app.config.limits.upload_bytes.0.into());
    headers.insert(
        "tus-checksum-algorithm",
        HeaderValue::from_static(protocol::CHECKSUM_ALGORITHMS),
    );
    (StatusCode::NO_CONTENT, headers).into_response()
}

/// 412 unless the client speaks this version (after authentication: who
/// may not upload learns that first); [`resumable_header`] adds the
/// `Tus-Version` the client should speak.
fn require_version(headers: &HeaderMap) -> Result<(), ApiError> {
    let sent = headers.get("tus-resumable").and_then(|v| v.to_str().ok());
    if sent == Some(protocol::VERSION) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::PRECONDITION_FAILED,
        "tus_version_unsupported",
        format!(
            "this server speaks tus {}; send `Tus-Resumable: {}` (got {sent:?})",
            protocol::VERSION,
            protocol::VERSION
        ),
    ))
}

fn header_text<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .map(|v| v.to_str().unwrap_or("(not text)"))
}

/// `POST`: `Upload-Length` and `Upload-Metadata` make a new upload; 201
/// with its `Location`.
async fn create_upload(
    State(app): State<App>,
    Authenticated(user): Authenticated,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    tus::may_resume(&user)?;
    require_version(&headers)?;
    let length = header_text(&headers, "upload-length")
        .ok_or(TusError::BadLength(
            "(none: Upload-Defer-Length is not supported)".into(),
        ))
        .and_then(|v| tus::parse_bytes(v, TusError::BadLength))?;
    let metadata = header_text(&headers, "upload-metadata").unwrap_or_default();
    let created = tus::create(&app, &user, length, metadata).await?;
    // Relative (RFC 9110 allows it): right behind any proxy that keeps
    // the path, whatever host name the client used.
    let location = format!("/api/v1/tus/{}", created.upload.id);
    let mut response = (StatusCode::CREATED, upload_headers(&created)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// `HEAD`: how many bytes the server holds.
async fn show_offset(
    State(app): State<App>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    tus::may_resume(&user)?;
    require_version(&headers)?;
    let upload = tus::status(&app, &user, &id).await?;
    let mut out = upload_headers(&Appended {
        upload,
        receipt: None,
    });
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok((StatusCode::OK, out).into_response())
}

/// `PATCH`: appends the body at `Upload-Offset`, checked against
/// `Upload-Checksum` when sent; 204 with the new offset.
async fn append_chunk(
    State(app): State<App>,
    Authenticated(user): Authenticated,
    Extension(slots): Extension<super::slots::UploadSlots>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    tus::may_resume(&user)?;
    // A PATCH sending bytes counts against the user's concurrent uploads.
    let _slot = slots.take(user.id)?;
    require_version(&headers)?;
    let kind = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if kind != Some(protocol::PATCH_CONTENT_TYPE) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "a PATCH body is {}, not {}",
                protocol::PATCH_CONTENT_TYPE,
                kind.unwrap_or("untyped")
            ),
        ));
    }
    let offset = header_text(&headers, "upload-offset")
        .ok_or(TusError::BadOffset("(none)".into()))
        .and_then(|v| tus::parse_bytes(v, TusError::BadOffset))?;
    let checksum = header_text(&headers, "upload-checksum")
        .map(protocol::parse_checksum)
        .transpose()
        .map_err(TusError::from)?;
    let appended = tus::append(&app, &user, &id, offset, checksum, body.into_data_stream()).await?;
    Ok((StatusCode::NO_CONTENT, upload_headers(&appended)).into_response())
}

/// `DELETE`: ends the upload and deletes what it holds.
async fn terminate_upload(
    State(app): State<App>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    tus::may_resume(&user)?;
    require_version(&headers)?;
    tus::terminate(&app, &user, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/v1/tus`: the caller's unfinished uploads (`holdq upload --list`).
async fn list_uploads(
    State(app): State<App>,
    Authenticated(user): Authenticated,
) -> Result<Json<Vec<TusUpload>>, ApiError> {
    Ok(Json(tus::list(&app, &user).await?))
}

/// `Upload-Offset`, `Upload-Length`, `Upload-Expires`, and once queued
/// `Holdq-Upload-Id` (the upload in the holding queue) and its position.
fn upload_headers(a: &Appended) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("upload-offset", a.upload.offset.into());
    h.insert("upload-length", a.upload.length.into());
    if let Some(v) = http_date(a.upload.expires_at).and_then(|d| HeaderValue::from_str(&d).ok())
        && a.upload.upload_id.is_none()
        && a.receipt.is_none()
    {
        h.insert("upload-expires", v);
    }
    let upload_id = a.receipt.as_ref().map(|r| r.id).or(a.upload.upload_id);
    if let Some(id) = upload_id {
        h.insert(HeaderName::from_static("holdq-upload-id"), id.into());
    }
    if let Some(r) = &a.receipt {
        h.insert(
            HeaderName::from_static("holdq-queue-position"),
            r.position.into(),
        );
    }
    h
}

/// An HTTP date (IMF-fixdate) of a time in ms since the epoch.
fn http_date(ms: i64) -> Option<String> {
    let format = time::format_description::parse_borrowed::<2>(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT",
    )
    .ok()?;
    time::OffsetDateTime::from_unix_timestamp(ms / 1000)
        .ok()?
        .format(&format)
        .ok()
}

impl From<TusError> for ApiError {
    fn from(e: TusError) -> Self {
        use StatusCode as S;
        use TusError as E;
        let (status, code) = match &e {
            E::NotFound => (S::NOT_FOUND, "no_such_tus_upload"),
            E::Expired => (S::GONE, "tus_upload_expired"),
            E::BadLength(_) => (S::BAD_REQUEST, "bad_upload_length"),
            E::BadOffset(_) => (S::BAD_REQUEST, "bad_upload_offset"),
            E::Header(crate::domain::tus::HeaderError::Metadata(_)) => {
                (S::BAD_REQUEST, "bad_upload_metadata")
            }
            E::Header(_) => (S::BAD_REQUEST, "bad_upload_checksum"),
            E::TooLarge { .. } => (S::PAYLOAD_TOO_LARGE, "upload_too_large"),
            E::QuotaExceeded { .. } => (S::PAYLOAD_TOO_LARGE, "tus_quota_exceeded"),
            E::OffsetMismatch { .. } => (S::CONFLICT, "offset_mismatch"),
            E::PastLength { .. } => (S::PAYLOAD_TOO_LARGE, "past_upload_length"),
            E::ChecksumMismatch => (
                S::from_u16(460).expect("460 is a status code"),
                "chunk_checksum_mismatch",
            ),
            E::Complete(_) => (S::CONFLICT, "tus_upload_complete"),
            E::Busy => (S::LOCKED, "tus_upload_busy"),
            E::Denied(d) => return d.clone().into(),
            E::Refused(_) | E::Internal(_) => {
                return match e {
                    E::Refused(refused) => refused.into(),
                    E::Internal(err) => Self::internal(err),
                    _ => unreachable!(),
                };
            }
        };
        Self::new(status, code, e.to_string())
    }
}
