//! The one HTTP error type: every refusal becomes
//! `{"error": {"code": "...", "message": "..."}}` with a fitting status.
//!
//! Policy: a user error (4xx) says what was wrong in words the user can act
//! on and is logged at debug level; an internal error (5xx) is logged once,
//! here, with its cause chain, and the client only learns that it happened.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::service::authz::Denied;
use crate::service::queue::QueueError;
use crate::service::upload::UploadError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn internal(err: anyhow::Error) -> Self {
        tracing::error!(error = format!("{err:#}"), "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal server error; the operator's log has the cause",
        )
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_client_error() {
            tracing::debug!(code = self.code, message = %self.message, "request refused");
        }
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = (self.status, Json(body)).into_response();
        if matches!(
            self.status,
            StatusCode::PAYLOAD_TOO_LARGE
                | StatusCode::INSUFFICIENT_STORAGE
                | StatusCode::REQUEST_TIMEOUT
                | StatusCode::TOO_MANY_REQUESTS
        ) {
            // The rest of the body is not read: the connection cannot be
            // reused, and the client must not try.
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        response
    }
}

impl From<Denied> for ApiError {
    fn from(d: Denied) -> Self {
        let status = match d {
            Denied::SignInRequired => StatusCode::UNAUTHORIZED,
            _ => StatusCode::FORBIDDEN,
        };
        Self::new(status, d.code(), d.to_string())
    }
}

impl From<UploadError> for ApiError {
    fn from(e: UploadError) -> Self {
        use StatusCode as S;
        use UploadError as E;
        let (status, code) = match &e {
            E::TooLarge { .. } => (S::PAYLOAD_TOO_LARGE, "upload_too_large"),
            E::Body(_) => (S::BAD_REQUEST, "incomplete_body"),
            E::NoSpace => (S::INSUFFICIENT_STORAGE, "insufficient_storage"),
            E::Idle(_) => (S::REQUEST_TIMEOUT, "body_timeout"),
            E::BadChecksumHeader(_) => (S::BAD_REQUEST, "bad_checksum_header"),
            E::ChecksumMismatch { .. } => (S::BAD_REQUEST, "checksum_mismatch"),
            E::Archive(a) if a.is_too_large() => (S::PAYLOAD_TOO_LARGE, a.code()),
            E::Archive(a) => (S::BAD_REQUEST, a.code()),
            E::UnknownPlatform { .. } => (S::BAD_REQUEST, "unknown_platform"),
            E::Denied(d) => return d.clone().into(),
            E::Obsolete { .. } => (S::CONFLICT, "package_obsolete"),
            E::Removed { .. } => (S::CONFLICT, "package_removed"),
            E::VersionExists { .. } => (S::CONFLICT, "version_exists"),
            E::VersionTooLow { .. } => (S::CONFLICT, "version_too_low"),
            E::NoSuchGroup(_) => (S::NOT_FOUND, "no_such_group"),
            E::GroupNotOpen { .. } => (S::CONFLICT, "group_not_open"),
            E::GroupHasPackage { .. } => (S::CONFLICT, "group_has_package"),
            E::AlreadyQueued(_) => (S::CONFLICT, "already_queued"),
            E::Internal(_) => {
                let E::Internal(err) = e else { unreachable!() };
                return Self::internal(err);
            }
        };
        Self::new(status, code, e.to_string())
    }
}

impl From<crate::service::obsolete::ObsoleteError> for ApiError {
    fn from(e: crate::service::obsolete::ObsoleteError) -> Self {
        use crate::service::obsolete::ObsoleteError as E;
        use StatusCode as S;
        let (status, code) = match &e {
            E::NoSuchPackage(_) => (S::NOT_FOUND, "not_found"),
            E::Denied(d) => return d.clone().into(),
            E::ReasonRequired(_) => (S::BAD_REQUEST, "reason_required"),
            E::BadReplacement(_) | E::ReplacesItself => (S::BAD_REQUEST, "bad_replacement"),
            E::AlreadyObsolete(_) => (S::CONFLICT, "already_obsolete"),
            E::NotObsolete(_) => (S::CONFLICT, "not_obsolete"),
            E::Removed(_) => (S::CONFLICT, "package_removed"),
            E::Internal(_) => {
                let E::Internal(err) = e else { unreachable!() };
                return Self::internal(err);
            }
        };
        Self::new(status, code, e.to_string())
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::NoSuchUpload(_) => {
                Self::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
            }
            QueueError::NoSuchPackage(_) => {
                Self::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
            }
            QueueError::Denied(d) => d.into(),
            QueueError::Db(e) => Self::internal(anyhow::Error::new(e)),
        }
    }
}
