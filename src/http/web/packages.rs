//! The package website: `/packages` (listing and search) and
//! `/packages/{name}`. Public, as the stable repository is.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::response::Response;
use serde::Deserialize;

use super::{Page, Visitor, WebError, respond};
use crate::http::{Entry, entry};
use crate::service::App;
use crate::service::authz::Action;
use crate::service::stable::StableError;
use crate::service::web::packages;

pub(super) fn routes() -> Vec<Entry> {
    vec![
        entry(Method::GET, "/packages", Action::ReadStable, list_packages),
        entry(
            Method::GET,
            "/packages/{name}",
            Action::ReadStable,
            show_package,
        ),
    ]
}

/// Query strings are read leniently: a page number that is not one is
/// the first page, not an error page.
#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    after: String,
    #[serde(default)]
    page: Option<String>,
}

fn page_number(raw: Option<&str>) -> i64 {
    raw.and_then(|p| p.parse().ok()).unwrap_or(1)
}

async fn list_packages(
    State(app): State<App>,
    visitor: Visitor,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let query = query.map(|q| q.0).unwrap_or_default();
    let result = async {
        let page = page_number(query.page.as_deref());
        let listing = packages::list_packages(&app, &query.q, &query.after, page)
            .await
            .map_err(|e| crate::http::ApiError::internal(e.into()))?;
        let title = if query.q.trim().is_empty() {
            "Packages".to_owned()
        } else {
            format!("Packages matching {:?}", query.q.trim())
        };
        Ok(Page::new("packages.html.j2", title, listing).render(&app, &visitor))
    }
    .await;
    respond(&app, &visitor, result)
}

#[derive(Debug, Default, Deserialize)]
struct PackageQuery {
    #[serde(default)]
    dependents: Option<String>,
}

async fn show_package(
    State(app): State<App>,
    visitor: Visitor,
    Path(name): Path<String>,
    query: Result<Query<PackageQuery>, QueryRejection>,
) -> Response {
    let query = query.map(|q| q.0).unwrap_or_default();
    let result = async {
        let page = page_number(query.dependents.as_deref()).max(1) as usize;
        let mut package = packages::package_page(&app, &name, page)
            .await
            .map_err(|e| match e {
                StableError::NoSuchPackage(_) | StableError::NoSuchVersion(..) => {
                    WebError::not_found(format!("no stable package {name:?}"))
                }
                StableError::Internal(e) => crate::http::ApiError::internal(e).into(),
            })?;
        if let Some(user) = &visitor.user
            && package.package.obsolete.is_none()
        {
            package.may_obsolete = super::ops::may_obsolete(&app, user, &name).await?;
        }
        Ok(Page::new("package.html.j2", name.clone(), package).render(&app, &visitor))
    }
    .await;
    respond(&app, &visitor, result)
}
