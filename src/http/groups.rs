//! Upload groups: `POST /groups`, `GET /groups/{id}`, `POST /groups/{id}/submit`
//! (members join with `POST /uploads?group=ID`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use serde::Deserialize;

use super::auth::Authenticated;
use super::{ApiError, Entry, entry};
use crate::service::App;
use crate::service::authz::Action;
use crate::service::groups::{self, GroupError, GroupView};

pub(super) fn routes() -> Vec<Entry> {
    let a = Action::ManageGroups;
    vec![
        entry(Method::POST, "/api/v1/groups", a, create_group),
        entry(Method::GET, "/api/v1/groups/{id}", a, show_group),
        entry(Method::POST, "/api/v1/groups/{id}/submit", a, submit_group),
    ]
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewGroup {
    /// Members expected: the group is submitted when the last arrives.
    expected: Option<i64>,
}

async fn create_group(
    State(app): State<App>,
    Authenticated(user): Authenticated,
    body: Option<Json<NewGroup>>,
) -> Result<(StatusCode, Json<GroupView>), ApiError> {
    let expected = body.and_then(|Json(b)| b.expected);
    let group = groups::create(&app, &user, expected).await?;
    Ok((StatusCode::CREATED, Json(group)))
}

async fn show_group(
    State(app): State<App>,
    Authenticated(user): Authenticated,
    Path(id): Path<i64>,
) -> Result<Json<GroupView>, ApiError> {
    Ok(Json(groups::show(&app, &user, id).await?))
}

async fn submit_group(
    State(app): State<App>,
    Authenticated(user): Authenticated,
    Path(id): Path<i64>,
) -> Result<Json<GroupView>, ApiError> {
    Ok(Json(groups::submit(&app, &user, id).await?))
}

impl From<GroupError> for ApiError {
    fn from(e: GroupError) -> Self {
        use GroupError as E;
        use StatusCode as S;
        let (status, code) = match &e {
            E::NoSuchGroup(_) => (S::NOT_FOUND, "no_such_group"),
            E::NotOpen { .. } => (S::CONFLICT, "group_not_open"),
            E::Empty(_) => (S::CONFLICT, "group_empty"),
            E::BadExpected(_) => (S::BAD_REQUEST, "bad_expected"),
            E::Denied(d) => return d.clone().into(),
            E::Internal(_) => {
                let E::Internal(err) = e else { unreachable!() };
                return Self::internal(err);
            }
        };
        Self::new(status, code, e.to_string())
    }
}
