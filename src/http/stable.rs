//! The stable repository, readable without a token (the index is
//! `http::index`): `GET /packages/{name}`, its `record` (what its pages
//! show, for followers), `GET /packages/{name}/{version}/archive`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;

use super::auth::Authenticated;
use super::{ApiError, Entry, entry};
use crate::service::App;
use crate::service::authz::Action;
use crate::service::obsolete::{self, Dependents, ObsoleteOutcome};
use crate::service::stable::{self, PackageView, StableError};
use crate::service::web::packages::{self, PackageRecord};

pub(super) fn routes() -> Vec<Entry> {
    vec![
        entry(
            Method::GET,
            "/api/v1/packages/{name}",
            Action::ReadStable,
            show_package,
        ),
        entry(
            Method::GET,
            "/api/v1/packages/{name}/record",
            Action::ReadStable,
            show_package_record,
        ),
        entry(
            Method::GET,
            "/api/v1/packages/{name}/dependents",
            Action::ReadStable,
            list_dependents,
        ),
        entry(
            Method::POST,
            "/api/v1/packages/{name}/obsolete",
            Action::Obsolete,
            obsolete_package,
        ),
        entry(
            Method::DELETE,
            "/api/v1/packages/{name}/obsolete",
            Action::UndoObsolescence,
            undo_obsolescence,
        ),
        entry(
            Method::GET,
            "/api/v1/packages/{name}/{version}/archive",
            Action::ReadStable,
            download_archive,
        ),
    ]
}

impl From<StableError> for ApiError {
    fn from(e: StableError) -> Self {
        match e {
            StableError::Internal(e) => ApiError::internal(e),
            e => ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string()),
        }
    }
}

async fn show_package(
    State(app): State<App>,
    Path(name): Path<String>,
) -> Result<Json<PackageView>, ApiError> {
    Ok(Json(stable::package(&app, &name).await?))
}

/// `GET /packages/{name}/record`: everything its pages show, as one
/// record (what a follower mirrors).
async fn show_package_record(
    State(app): State<App>,
    Path(name): Path<String>,
) -> Result<Json<PackageRecord>, ApiError> {
    Ok(Json(packages::record(&app, &name).await?))
}

async fn download_archive(
    State(app): State<App>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let path = stable::archive(&app, &name, &version).await?;
    super::archive_response(&path, &format!("{name}-{version}.tar.gz"), None).await
}

#[derive(serde::Deserialize)]
struct DependentsQuery {
    #[serde(default)]
    transitive: bool,
}

/// `GET /packages/{name}/dependents[?transitive=true]`.
async fn list_dependents(
    State(app): State<App>,
    Path(name): Path<String>,
    axum::extract::Query(q): axum::extract::Query<DependentsQuery>,
) -> Result<Json<Dependents>, ApiError> {
    let dependents = stable::dependents_of(&app, &name, q.transitive).await?;
    Ok(Json(Dependents {
        package: name,
        transitive: q.transitive,
        dependents,
    }))
}

#[derive(serde::Deserialize)]
struct ObsoleteBody {
    reason: String,
    replacement: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

/// `POST /packages/{name}/obsolete` (owner or operator).
async fn obsolete_package(
    State(app): State<App>,
    Authenticated(user): Authenticated,
    Path(name): Path<String>,
    Json(body): Json<ObsoleteBody>,
) -> Result<Json<ObsoleteOutcome>, ApiError> {
    let outcome = obsolete::obsolete(
        &app,
        &user,
        &name,
        &body.reason,
        body.replacement.as_deref(),
        body.dry_run,
    )
    .await?;
    Ok(Json(outcome))
}

/// `DELETE /packages/{name}/obsolete` (operators): undo, while not removed.
async fn undo_obsolescence(
    State(app): State<App>,
    Authenticated(user): Authenticated,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    obsolete::undo(&app, &user, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
