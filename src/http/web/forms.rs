//! The forms: sign in with an API token, sign out, and the operators'
//! cancel. Each answers with a redirect (303) to the page to look at next.
//! A form is checked in the policy's order: signed in (401), allowed (403),
//! its CSRF token (403), then its fields (400).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::visitor::{FORM_COOKIE, SESSION_COOKIE, cookie_header};
use super::{Page, PageResult, Visitor, WebError, parse_id, respond};
use crate::http::{ApiError, Entry, entry};
use crate::service::App;
use crate::service::authz::{Action, authorize};
use crate::service::operators;
use crate::service::web::sessions::{self, SignInError};

pub(super) fn routes() -> Vec<Entry> {
    vec![
        // Anyone may try to sign in.
        entry(Method::GET, "/signin", Action::ReadStable, sign_in_form),
        entry(Method::POST, "/signin", Action::ReadStable, sign_in),
        entry(Method::POST, "/signout", Action::ReadAccount, sign_out),
        entry(
            Method::POST,
            "/uploads/{id}/cancel",
            Action::ControlQueue,
            cancel_upload,
        ),
    ]
}

/// A form's fields, or 400 naming what is wrong.
pub(super) fn parse_form<T: DeserializeOwned>(body: &Bytes) -> Result<T, WebError> {
    serde_urlencoded::from_bytes(body)
        .map_err(|e| WebError::bad_request(format!("the form is incomplete: {e}")))
}

/// A form of a signed-in visitor: its CSRF token first (403 when it is
/// missing or wrong), then its fields (400).
pub(super) fn checked_form<T: DeserializeOwned>(
    visitor: &Visitor,
    body: &Bytes,
) -> Result<T, WebError> {
    let sent: CsrfOnly = serde_urlencoded::from_bytes(body).unwrap_or_default();
    visitor.check_csrf(&sent.csrf)?;
    parse_form(body)
}

/// A redirect to `to` (a path of this server) after a form.
pub(super) fn see_other(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

/// Only a path of this server is followed after signing in (no open
/// redirect to another site).
fn local_path(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n,
        _ => "/",
    }
}

async fn sign_in_form(State(app): State<App>, visitor: Visitor) -> Response {
    #[derive(serde::Serialize)]
    struct Form {
        welcome: bool,
    }
    Page::new("signin.html.j2", "Sign in", Form { welcome: false }).render(&app, &visitor)
}

#[derive(Deserialize)]
struct SignInForm {
    token: String,
    #[serde(default)]
    csrf: String,
    next: Option<String>,
}

async fn sign_in(State(app): State<App>, visitor: Visitor, body: Bytes) -> Response {
    let result: PageResult = async {
        let form: SignInForm = parse_form(&body)?;
        visitor.check_csrf(&form.csrf)?;
        let signed_in = sessions::sign_in(&app, &form.token)
            .await
            .map_err(|e| match e {
                SignInError::BadToken => WebError::from(ApiError::unauthorized(e.to_string())),
                SignInError::Db(e) => ApiError::internal(e.into()).into(),
            })?;
        let mut response = see_other(local_path(form.next.as_deref()));
        let ttl = app.config.web.session_ttl.as_secs();
        let headers = response.headers_mut();
        headers.append(
            header::SET_COOKIE,
            cookie_header(&app, SESSION_COOKIE, &signed_in.cookie, Some(ttl)),
        );
        headers.append(
            header::SET_COOKIE,
            cookie_header(&app, FORM_COOKIE, "", Some(0)),
        );
        Ok(response)
    }
    .await;
    respond(&app, &visitor, result)
}

#[derive(Default, Deserialize)]
pub(super) struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

async fn sign_out(State(app): State<App>, visitor: Visitor, body: Bytes) -> Response {
    let result: PageResult = async {
        visitor.require_user()?;
        let _: CsrfOnly = checked_form(&visitor, &body)?;
        if let Some((cookie, _)) = &visitor.session {
            sessions::sign_out(&app, cookie)
                .await
                .map_err(|e| ApiError::internal(e.into()))?;
        }
        let mut response = see_other("/");
        response.headers_mut().append(
            header::SET_COOKIE,
            cookie_header(&app, SESSION_COOKIE, "", Some(0)),
        );
        Ok(response)
    }
    .await;
    respond(&app, &visitor, result)
}

#[derive(Deserialize)]
struct CancelForm {
    why: String,
}

async fn cancel_upload(
    State(app): State<App>,
    visitor: Visitor,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let result: PageResult = async {
        let user = visitor.require_user()?;
        authorize(Some(user), Action::ControlQueue, None)?;
        let id = parse_id(&id)?;
        let form: CancelForm = checked_form(&visitor, &body)?;
        operators::cancel(&app, user, id, &form.why).await?;
        Ok(see_other(&format!("/uploads/{id}")))
    }
    .await;
    respond(&app, &visitor, result)
}
