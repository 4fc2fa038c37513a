//! The web pages (SPEC section 8a): server-rendered HTML beside the JSON
//! API, from minijinja templates under `templates/web/` (compiled in,
//! overridable from `web.templates_dir`), with one stylesheet compiled in
//! and no script. Every page works without JavaScript. Handlers parse,
//! call the same use cases as the API (which ask the same policy), and
//! render; a refusal is a page with the API's status and message.

mod account;
mod forms;
mod ops;
mod packages;
mod pages;
mod visitor;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};

use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use minijinja::{AutoEscape, Environment};
use serde::Serialize;

use super::{ApiError, Entry};
use crate::service::App;
use crate::service::authz::Denied;

pub use visitor::Visitor;

pub(super) fn routes() -> Vec<Entry> {
    let mut all = pages::routes();
    all.extend(packages::routes());
    all.extend(forms::routes());
    all.extend(ops::routes());
    all.extend(account::routes());
    all
}

/// The templates compiled in, by name.
const EMBEDDED: &[(&str, &str)] = &[
    (
        "base.html.j2",
        include_str!("../../../templates/web/base.html.j2"),
    ),
    (
        "error.html.j2",
        include_str!("../../../templates/web/error.html.j2"),
    ),
    (
        "signin.html.j2",
        include_str!("../../../templates/web/signin.html.j2"),
    ),
    (
        "queue.html.j2",
        include_str!("../../../templates/web/queue.html.j2"),
    ),
    (
        "upload.html.j2",
        include_str!("../../../templates/web/upload.html.j2"),
    ),
    (
        "workers.html.j2",
        include_str!("../../../templates/web/workers.html.j2"),
    ),
    (
        "packages.html.j2",
        include_str!("../../../templates/web/packages.html.j2"),
    ),
    (
        "package.html.j2",
        include_str!("../../../templates/web/package.html.j2"),
    ),
    (
        "passmark.html.j2",
        include_str!("../../../templates/web/passmark.html.j2"),
    ),
    (
        "obsolete.html.j2",
        include_str!("../../../templates/web/obsolete.html.j2"),
    ),
    (
        "account.html.j2",
        include_str!("../../../templates/web/account.html.j2"),
    ),
    (
        "signin_form.html.j2",
        include_str!("../../../templates/web/signin_form.html.j2"),
    ),
];

/// The stylesheet, served at `/static/holdq.css`.
const STYLESHEET: &str = include_str!("../../../templates/web/holdq.css");

/// One environment per override directory (tests run several servers in
/// one process); the templates are parsed once each.
static ENVIRONMENTS: LazyLock<Mutex<HashMap<Option<PathBuf>, Arc<Environment<'static>>>>> =
    LazyLock::new(Mutex::default);

fn environment(app: &App) -> Arc<Environment<'static>> {
    let dir = app.config.web.templates_dir.clone();
    let mut all = ENVIRONMENTS.lock().unwrap_or_else(|e| e.into_inner());
    all.entry(dir.clone())
        .or_insert_with(|| Arc::new(new_environment(dir)))
        .clone()
}

fn new_environment(override_dir: Option<PathBuf>) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_loader(move |name| {
        if let Some(path) = override_dir.as_ref().map(|d| d.join(name))
            && path.is_file()
        {
            return std::fs::read_to_string(&path).map(Some).map_err(|e| {
                minijinja::Error::new(
                    minijinja::ErrorKind::TemplateNotFound,
                    format!("{}: {e}", path.display()),
                )
            });
        }
        Ok(EMBEDDED
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, source)| (*source).to_owned()))
    });
    // Every value is escaped: a description with <script> stays text.
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    env
}

/// A page: its template and what it shows, rendered for a visitor.
pub struct Page<T: Serialize> {
    pub template: &'static str,
    pub title: String,
    pub status: StatusCode,
    pub data: T,
}

impl<T: Serialize> Page<T> {
    pub fn new(template: &'static str, title: impl Into<String>, data: T) -> Self {
        Self {
            template,
            title: title.into(),
            status: StatusCode::OK,
            data,
        }
    }

    /// Renders the page; a template error is an internal error, logged once.
    pub fn render(self, app: &App, visitor: &Visitor) -> Response {
        #[derive(Serialize)]
        struct Context<'a, T> {
            title: &'a str,
            visitor: visitor::VisitorView<'a>,
            page: &'a T,
        }
        let ctx = Context {
            title: &self.title,
            visitor: visitor.view(),
            page: &self.data,
        };
        let rendered = environment(app)
            .get_template(self.template)
            .and_then(|t| t.render(minijinja::Value::from(minijinja::value::Serde(&ctx))));
        match rendered {
            Ok(html) => {
                let mut response = (self.status, Html(html)).into_response();
                visitor.set_cookies(app, &mut response);
                response
            }
            Err(e) => {
                let err = ApiError::internal(
                    anyhow::Error::new(e).context(format!("rendering {}", self.template)),
                );
                (err.status, Html(format!("<h1>{}</h1>", err.message))).into_response()
            }
        }
    }
}

/// A refusal or failure as a page: the API's status and message (so both
/// say the same), with a sign-in form when signing in would help.
pub struct WebError {
    pub error: ApiError,
}

impl<E: Into<ApiError>> From<E> for WebError {
    fn from(e: E) -> Self {
        Self { error: e.into() }
    }
}

impl WebError {
    pub fn not_found(what: impl Into<String>) -> Self {
        Self {
            error: ApiError::new(StatusCode::NOT_FOUND, "not_found", what),
        }
    }

    pub fn bad_request(what: impl Into<String>) -> Self {
        Self {
            error: ApiError::new(StatusCode::BAD_REQUEST, "bad_request", what),
        }
    }

    /// The page of this error for `visitor`.
    pub fn render(self, app: &App, visitor: &Visitor) -> Response {
        #[derive(Serialize)]
        struct ErrorPage {
            status: u16,
            code: &'static str,
            message: String,
            sign_in: bool,
        }
        let status = self.error.status;
        if status.is_client_error() {
            tracing::debug!(code = self.error.code, message = %self.error.message, "page refused");
        }
        let sign_in = status == StatusCode::UNAUTHORIZED;
        // The policy's "sign in" speaks of the API's header; a page offers its form.
        let message = if self.error.message == Denied::SignInRequired.to_string() {
            "Sign in with your API token to see this page.".to_owned()
        } else {
            self.error.message
        };
        let title = status.canonical_reason().unwrap_or("Error").to_owned();
        Page {
            template: "error.html.j2",
            title,
            status,
            data: ErrorPage {
                status: status.as_u16(),
                code: self.error.code,
                message,
                sign_in,
            },
        }
        .render(app, visitor)
    }
}

/// What a page handler answers: the page, or the page of its error.
pub type PageResult = Result<Response, WebError>;

/// Renders a handler's result for `visitor`.
pub fn respond(app: &App, visitor: &Visitor, result: PageResult) -> Response {
    result.unwrap_or_else(|e| e.render(app, visitor))
}

/// `GET /static/holdq.css`.
pub async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLESHEET,
    )
        .into_response()
}

/// A path parameter that must be an id: 404 when it is not a number.
pub fn parse_id(raw: &str) -> Result<i64, WebError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| WebError::not_found(format!("no upload {raw:?}: an upload id is a number")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_file_is_compiled_in_and_parses() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/web");
        let env = new_environment(None);
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".j2") {
                assert!(
                    EMBEDDED.iter().any(|(n, _)| *n == name),
                    "{name} is not compiled in"
                );
                env.get_template(&name)
                    .unwrap_or_else(|e| panic!("{name}: {e:#}"));
            }
        }
    }
}
