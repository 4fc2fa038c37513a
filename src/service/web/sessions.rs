//! Sign-in sessions: an API token buys a session stored in the database
//! (so that any of several servers honours it), named by a random id that
//! only the browser's cookie holds (the database keeps its sha256, as for
//! tokens). Each session carries the CSRF token its forms must send back.

use rand::RngCore;

use super::super::App;
use super::super::users::{self, User, hash_token};
use crate::db;

/// A signed-in browser as a request presents it.
#[derive(Clone, Debug)]
pub struct Session {
    pub user: User,
    /// What every form of this session sends back.
    pub csrf: String,
}

/// A new session: the cookie's value (shown to the browser only) and the
/// session itself.
#[derive(Clone, Debug)]
pub struct SignedIn {
    pub cookie: String,
    pub session: Session,
}

#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("that API token is not valid; `holdq user add` or `holdq user token` prints one")]
    BadToken,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// 256 random bits, hex: a session id or a CSRF token.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Signs in with an API token; the session lasts `web.session_ttl`.
pub async fn sign_in(app: &App, token: &str) -> Result<SignedIn, SignInError> {
    let user = users::authenticate(&app.db, token.trim())
        .await?
        .ok_or(SignInError::BadToken)?;
    let cookie = random_secret();
    let csrf = random_secret();
    let ttl = i64::try_from(app.config.web.session_ttl.as_millis()).unwrap_or(i64::MAX / 2);
    let mut tx = app.db.begin_write().await?;
    let token_id = db::web::token_id(&mut tx, &hash_token(token.trim()))
        .await?
        .ok_or(SignInError::BadToken)?;
    db::web::delete_expired_sessions(&mut tx).await?;
    db::web::insert_session(
        &mut tx,
        &hash_token(&cookie),
        user.id,
        token_id,
        &csrf,
        db::now_ms().saturating_add(ttl),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(user.id = user.id, "signed in on the web");
    Ok(SignedIn {
        cookie,
        session: Session { user, csrf },
    })
}

/// The unexpired session a cookie names, if any.
pub async fn session(app: &App, cookie: &str) -> Result<Option<Session>, sqlx::Error> {
    let mut conn = app.db.pool().acquire().await?;
    Ok(db::web::find_session(&mut conn, &hash_token(cookie))
        .await?
        .map(|row| Session {
            user: row.user().into(),
            csrf: row.csrf,
        }))
}

/// Ends the session a cookie names.
pub async fn sign_out(app: &App, cookie: &str) -> Result<(), sqlx::Error> {
    let mut conn = app.db.pool().acquire().await?;
    db::web::delete_session(&mut conn, &hash_token(cookie)).await
}

/// Whether a form's CSRF token is the session's, compared in constant time.
pub fn csrf_matches(expected: &str, sent: &str) -> bool {
    expected.len() == sent.len()
        && expected
            .bytes()
            .zip(sent.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}
