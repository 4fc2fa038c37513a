//! Bearer-token authentication as an extractor: a handler that takes
//! [`Authenticated`] is refused with 401 before it runs.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::ApiError;
use crate::service::App;
use crate::service::users::{self, User};

/// The user whose token came with the request.
pub struct Authenticated(pub User);

impl FromRequestParts<App> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized("an API token is required: send `Authorization: Bearer <token>`")
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be `Bearer <token>`")
            })?;
        let user = users::authenticate(&app.db, token)
            .await
            .map_err(|e| ApiError::internal(anyhow::Error::new(e).context("authenticating")))?
            .ok_or_else(|| ApiError::unauthorized("the API token is not valid"))?;
        Ok(Self(user))
    }
}
