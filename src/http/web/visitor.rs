//! Who is looking at a page: a signed-in session (cookie), a bearer token
//! (scripts and the route test; no CSRF risk, since browsers never attach
//! one by themselves), or an anonymous visitor, who gets a CSRF cookie for
//! the sign-in form (double submit: the form must send the cookie's value).

use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::WebError;
use crate::service::App;
use crate::service::authz::{Denied, Viewer};
use crate::service::users::{self, User};
use crate::service::web::sessions::{self, Session, csrf_matches, random_secret};

/// The session cookie: a random id whose hash names the session row.
pub const SESSION_COOKIE: &str = "holdq_session";
/// The anonymous visitor's CSRF cookie, for the sign-in form.
pub const FORM_COOKIE: &str = "holdq_csrf";

/// The visitor of a page.
// No `Debug`: it holds the request's token.
#[derive(Clone)]
pub struct Visitor {
    pub user: Option<User>,
    /// The session and its cookie's value, when signed in with one.
    pub session: Option<(String, Session)>,
    /// Signed in with `Authorization: Bearer`: the token.
    bearer: Option<String>,
    /// The anonymous visitor's CSRF value, and whether it came with the
    /// request (else it is new and set on the response).
    form_csrf: String,
    form_csrf_sent: bool,
}

/// What the templates know of the visitor.
#[derive(Serialize)]
pub struct VisitorView<'a> {
    pub signed_in: bool,
    pub email: Option<&'a str>,
    pub is_operator: bool,
    /// The token every form carries.
    pub csrf: &'a str,
}

/// The value of cookie `name` in a `Cookie` header.
fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

impl FromRequestParts<App> for Visitor {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let failed = |e: sqlx::Error| {
            let err =
                super::ApiError::internal(anyhow::Error::new(e).context("reading the session"));
            (StatusCode::INTERNAL_SERVER_ERROR, err.message).into_response()
        };
        let form_cookie = cookie(parts, FORM_COOKIE).map(str::to_owned);
        let mut visitor = Visitor {
            user: None,
            session: None,
            bearer: None,
            form_csrf_sent: form_cookie.is_some(),
            form_csrf: form_cookie.unwrap_or_else(random_secret),
        };
        let bearer = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(|t| t.trim().to_owned());
        if let Some(token) = bearer {
            visitor.user = users::authenticate(&app.db, &token).await.map_err(failed)?;
            visitor.bearer = visitor.user.is_some().then_some(token);
        } else if let Some(id) = cookie(parts, SESSION_COOKIE)
            && let Some(session) = sessions::session(app, id).await.map_err(failed)?
        {
            visitor.user = Some(session.user.clone());
            visitor.session = Some((id.to_owned(), session));
        }
        Ok(visitor)
    }
}

impl Visitor {
    /// Who asks, as the policy sees it under this server's configuration.
    pub fn viewer(&self, app: &App) -> Viewer<'_> {
        super::super::auth::viewer(app, self.user.as_ref())
    }

    pub fn view(&self) -> VisitorView<'_> {
        VisitorView {
            signed_in: self.user.is_some(),
            email: self.user.as_ref().map(|u| u.email.as_str()),
            is_operator: self.user.as_ref().is_some_and(|u| u.is_operator),
            csrf: self.csrf(),
        }
    }

    /// The CSRF token this visitor's forms carry.
    pub fn csrf(&self) -> &str {
        match &self.session {
            Some((_, s)) => &s.csrf,
            None => &self.form_csrf,
        }
    }

    /// The signed-in user, or the policy's "sign in" (401).
    pub fn require_user(&self) -> Result<&User, WebError> {
        self.user
            .as_ref()
            .ok_or_else(|| Denied::SignInRequired.into())
    }

    /// Refuses (403) a form whose CSRF token is not this visitor's.
    pub fn check_csrf(&self, sent: &str) -> Result<(), WebError> {
        let ok = self.bearer.is_some()
            || match &self.session {
                Some((_, s)) => csrf_matches(&s.csrf, sent),
                None => self.form_csrf_sent && csrf_matches(&self.form_csrf, sent),
            };
        if ok {
            Ok(())
        } else {
            Err(super::ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf",
                "this form's CSRF token is missing or stale: reload the page and send the form again",
            )
            .into())
        }
    }

    /// Whether what signed this request in (its session or its token) is
    /// still valid, e.g. after the visitor revoked a token.
    pub async fn still_signed_in(&self, app: &App) -> Result<bool, sqlx::Error> {
        Ok(match (&self.session, &self.bearer) {
            (Some((cookie, _)), _) => sessions::session(app, cookie).await?.is_some(),
            (None, Some(token)) => users::authenticate(&app.db, token).await?.is_some(),
            (None, None) => false,
        })
    }

    /// Sets the anonymous CSRF cookie when it is new.
    pub fn set_cookies(&self, app: &App, response: &mut Response) {
        if self.session.is_none() && !self.form_csrf_sent {
            let value = cookie_header(app, FORM_COOKIE, &self.form_csrf, None);
            response.headers_mut().append(SET_COOKIE, value);
        }
    }
}

/// A `Set-Cookie` header: HttpOnly, SameSite=Lax, Secure when the server
/// is reached over https; `max_age` seconds (`Some(0)` deletes it).
pub fn cookie_header(app: &App, name: &str, value: &str, max_age: Option<u64>) -> HeaderValue {
    let secure = if app.config.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let age = max_age
        .map(|s| format!("; Max-Age={s}"))
        .unwrap_or_default();
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax{secure}{age}"
    ))
    .expect("hex values and fixed attributes are a valid header")
}
