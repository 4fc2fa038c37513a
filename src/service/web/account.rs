//! The signed-in user's own page: what the policy lets them do, their API
//! tokens (a new one is shown once; revoking one ends the sessions signed
//! in with it) and the packages they own.

use serde::Serialize;

use crate::db;
use crate::service::authz::Account;
use crate::service::users::{self, User, UserError};
use crate::service::{App, format_time};

#[derive(Clone, Debug, Serialize)]
pub struct AccountPage {
    pub account: Account,
    pub tokens: Vec<TokenView>,
    pub packages: Vec<String>,
    /// A token just made, shown this once.
    pub new_token: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TokenView {
    pub id: i64,
    pub created_at: String,
    pub last_used_at: Option<String>,
}

pub async fn account_page(
    app: &App,
    user: &User,
    new_token: Option<String>,
) -> Result<AccountPage, sqlx::Error> {
    let mut conn = app.db.pool().acquire().await?;
    let tokens = db::web::tokens_of(&mut conn, user.id)
        .await?
        .into_iter()
        .map(|t| TokenView {
            id: t.id,
            created_at: format_time(t.created_at),
            last_used_at: t.last_used_at.map(format_time),
        })
        .collect();
    let packages = db::web::owned_packages(&mut conn, user.id).await?;
    Ok(AccountPage {
        account: Account::of(user.clone()),
        tokens,
        packages,
        new_token,
    })
}

/// A new API token for `user`, returned this once.
pub async fn create_token(app: &App, user: &User) -> Result<String, UserError> {
    let token = users::issue_token(&app.db, &user.email).await?;
    tracing::info!(user.id = user.id, "API token made on the web");
    Ok(token)
}

/// Revokes `user`'s token `id`; whether they had it.
pub async fn revoke_token(app: &App, user: &User, id: i64) -> Result<bool, sqlx::Error> {
    let mut conn = app.db.pool().acquire().await?;
    let revoked = db::web::delete_token(&mut conn, user.id, id).await?;
    if revoked {
        tracing::info!(
            user.id = user.id,
            token.id = id,
            "API token revoked on the web"
        );
    }
    Ok(revoked)
}
