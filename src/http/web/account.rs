//! `/account`: the signed-in user's tokens (make one, shown once; revoke
//! one) and packages.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;

use super::forms::{CsrfOnly, checked_form, see_other};
use super::{Page, PageResult, Visitor, WebError, respond};
use crate::http::{ApiError, Entry, entry};
use crate::service::App;
use crate::service::authz::Action;
use crate::service::web::account;

pub(super) fn routes() -> Vec<Entry> {
    vec![
        entry(Method::GET, "/account", Action::ReadAccount, show_account),
        entry(
            Method::POST,
            "/account/tokens",
            Action::ReadAccount,
            create_token,
        ),
        entry(
            Method::POST,
            "/account/tokens/{id}/revoke",
            Action::ReadAccount,
            revoke_token,
        ),
    ]
}

fn internal(e: impl Into<anyhow::Error>) -> WebError {
    ApiError::internal(e.into()).into()
}

async fn render(app: &App, visitor: &Visitor, new_token: Option<String>) -> PageResult {
    let user = visitor.require_user()?;
    let page = account::account_page(app, user, new_token)
        .await
        .map_err(internal)?;
    Ok(Page::new("account.html.j2", "Your account", page).render(app, visitor))
}

async fn show_account(State(app): State<App>, visitor: Visitor) -> Response {
    let result = render(&app, &visitor, None).await;
    respond(&app, &visitor, result)
}

async fn create_token(State(app): State<App>, visitor: Visitor, body: Bytes) -> Response {
    let result: PageResult = async {
        let user = visitor.require_user()?;
        let _: CsrfOnly = checked_form(&visitor, &body)?;
        let token = account::create_token(&app, user).await.map_err(internal)?;
        render(&app, &visitor, Some(token)).await
    }
    .await;
    respond(&app, &visitor, result)
}

async fn revoke_token(
    State(app): State<App>,
    visitor: Visitor,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let result: PageResult = async {
        let user = visitor.require_user()?;
        let _: CsrfOnly = checked_form(&visitor, &body)?;
        let id: i64 = id
            .parse()
            .map_err(|_| WebError::not_found(format!("no token {id:?}")))?;
        if !account::revoke_token(&app, user, id)
            .await
            .map_err(internal)?
        {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("you have no token {id}"),
            )
            .into());
        }
        // Revoking the token this visitor signed in with signs them out.
        let signed_in = visitor.still_signed_in(&app).await.map_err(internal)?;
        Ok(see_other(if signed_in { "/account" } else { "/signin" }))
    }
    .await;
    respond(&app, &visitor, result)
}
