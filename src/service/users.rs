//! Users and API tokens: adding a user (which prints a token once),
//! issuing another token, and authenticating a bearer token.

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::db::{self, Db};
use crate::domain::Maintainer;

/// An authenticated user.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct User {
    pub id: i64,
    pub email: String,
    pub is_operator: bool,
    /// A platform worker's account: it may fetch upload archives, nothing more.
    pub is_worker: bool,
}

/// What a new user may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Uploads and owns packages.
    Maintainer,
    /// Also runs the server: pass mark, cancels, platforms, any package.
    Operator,
    /// A platform worker on another machine: reads upload archives only.
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Maintainer => "user",
            Role::Operator => "operator",
            Role::Worker => "worker",
        }
    }
}

impl From<db::users::UserRow> for User {
    fn from(row: db::users::UserRow) -> Self {
        Self {
            id: row.id,
            email: row.email,
            is_operator: row.is_operator != 0,
            is_worker: row.is_worker != 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("{0:?} is not an email address")]
    InvalidEmail(String),
    #[error("a user {0:?} exists already; use `holdq user token` for a new token")]
    Exists(String),
    #[error("no user {0:?}")]
    NoSuchUser(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// The prefix of every token: recognisable in a leaked-secret scan.
const TOKEN_PREFIX: &str = "hq_";

/// Adds a user and returns them with a new token, shown this once only.
pub async fn add_user(db: &Db, email: &str, role: Role) -> Result<(User, String), UserError> {
    let address = Maintainer::parse(email)
        .ok()
        .filter(|m| m.name.is_none())
        .ok_or_else(|| UserError::InvalidEmail(email.to_owned()))?
        .email;
    let mut tx = db.begin_write().await?;
    if db::users::find_by_email(&mut tx, &address).await?.is_some() {
        return Err(UserError::Exists(address));
    }
    let user: User = db::users::insert_user(
        &mut tx,
        &address,
        role == Role::Operator,
        role == Role::Worker,
    )
    .await
    .map_err(|e| match e {
        e if db::is_unique_violation(&e, "users_email_key") => UserError::Exists(address.clone()),
        e => e.into(),
    })?
    .into();
    let token = new_token();
    db::users::insert_token(&mut tx, user.id, &hash_token(&token)).await?;
    tx.commit().await?;
    tracing::info!(user.id = user.id, user.role = role.as_str(), "user added");
    Ok((user, token))
}

/// Issues another token for an existing user.
pub async fn issue_token(db: &Db, email: &str) -> Result<String, UserError> {
    let mut tx = db.begin_write().await?;
    let user = db::users::find_by_email(&mut tx, email)
        .await?
        .ok_or_else(|| UserError::NoSuchUser(email.to_owned()))?;
    let token = new_token();
    db::users::insert_token(&mut tx, user.id, &hash_token(&token)).await?;
    tx.commit().await?;
    Ok(token)
}

/// The user a bearer token belongs to, if any.
pub async fn authenticate(db: &Db, token: &str) -> Result<Option<User>, sqlx::Error> {
    if !token.starts_with(TOKEN_PREFIX) {
        return Ok(None);
    }
    let mut conn = db.pool().acquire().await?;
    Ok(db::users::find_by_token_hash(&mut conn, &hash_token(token))
        .await?
        .map(User::from))
}

/// The user with this id, for work done on their behalf without a request
/// (finishing an interrupted resumable upload).
pub async fn find_by_id(db: &Db, id: i64) -> Result<Option<User>, sqlx::Error> {
    let mut conn = db.pool().acquire().await?;
    Ok(db::users::find_by_id(&mut conn, id).await?.map(User::from))
}

/// The user with this email (a drop-box manifest names its uploader so).
pub async fn find_by_email(db: &Db, email: &str) -> Result<Option<User>, sqlx::Error> {
    let mut conn = db.pool().acquire().await?;
    Ok(db::users::find_by_email(&mut conn, email)
        .await?
        .map(User::from))
}

fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

/// Tokens carry 256 random bits, so a plain sha256 is a safe way to store
/// them (as crates.io does); no salt or slow hash is needed.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}
