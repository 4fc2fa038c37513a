//! Bearer-token authentication as an extractor: a handler that takes
//! [`Authenticated`] is refused with 401 before it runs.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::ApiError;
use crate::service::App;
use crate::service::authz::Viewer;
use crate::service::users::{self, User};

/// The user whose token came with the request.
pub struct Authenticated(pub User);

/// The user whose token came with the request, or `None` when none came
/// (a token that came and is not valid is still refused): for what the
/// configuration may make public (`web.public_queue`).
pub struct MaybeAuthenticated(pub Option<User>);

/// Who asks, as the policy sees it under this server's configuration.
pub fn viewer<'a>(app: &App, user: Option<&'a User>) -> Viewer<'a> {
    Viewer {
        user,
        public_queue: app.config.web.public_queue,
    }
}

impl FromRequestParts<App> for MaybeAuthenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        if parts.headers.get(AUTHORIZATION).is_none() {
            return Ok(Self(None));
        }
        let Authenticated(user) = Authenticated::from_request_parts(parts, app).await?;
        Ok(Self(Some(user)))
    }
}

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
