//! The one authorization policy (`service::authz`): every route of the
//! router answers each role as the policy decides, and an upload's logs and
//! email recipients are for its package's owners and operators.

use holdq::service::authz::{self, Action, Package};
use holdq::service::users::User;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::on_both_databases;
use crate::support::archives::package_building;
use crate::support::{TestApp, TestDb};

on_both_databases!(
    every_route_answers_each_role_as_the_policy_decides,
    a_maintainer_reading_another_owners_upload_gets_its_state_but_no_logs_and_no_recipients,
);

/// The roles the route test plays, in this order (the operator last: what
/// it is allowed changes the fixture, e.g. a cancel).
const ROLES: [&str; 5] = ["anonymous", "maintainer", "owner", "worker", "operator"];

/// The archive of `wave` the route test uploads.
fn wave(version: &str) -> Vec<u8> {
    package_building("wave", version, &[], "true", None)
}

/// A request to `route` as the test sends it: its path with the fixture's
/// values in place of the parameters, and a body its handler accepts.
fn request_for(route: &holdq::http::Route, upload: i64, platform: &str) -> (String, Body) {
    let mut path = route
        .path
        .replace("{id}", &upload.to_string())
        .replace("{version}", "1.0.0");
    path = if path.starts_with("/api/v1/platforms/") {
        path.replace("{name}", platform)
    } else {
        path.replace("{name}", "wave")
    };
    let body = match (route.method.as_str(), route.path) {
        ("GET" | "DELETE", "/api/v1/uploads") => {
            path.push_str("?package=wave");
            Body::None
        }
        ("GET" | "DELETE", _) => Body::None,
        ("POST", "/api/v1/uploads") => Body::Archive(wave("1.0.1")),
        ("PUT", "/api/v1/passmark") => {
            Body::Json(json!({ "key": "threshold", "value": "1.0", "why": "route test" }))
        }
        ("POST", "/api/v1/passmark/simulate") => {
            Body::Json(json!({ "changes": [["threshold", "0.5"]] }))
        }
        ("POST", "/api/v1/uploads/{id}/cancel") => Body::Json(json!({ "why": "route test" })),
        ("POST", "/api/v1/packages/{name}/obsolete") => {
            Body::Json(json!({ "reason": "route test", "dry_run": true }))
        }
        _ => Body::Json(json!({})),
    };
    (path, body)
}

enum Body {
    None,
    Json(Value),
    Archive(Vec<u8>),
}

async fn every_route_answers_each_role_as_the_policy_decides(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let owner = app.user("ada@example.org").await;
    let maintainer = app.user("eve@example.org").await;
    let worker = holdq::service::users::add_user(
        &app.app.db,
        "farm@example.org",
        holdq::service::users::Role::Worker,
    )
    .await
    .unwrap()
    .1;
    // wave 1.0.0 is stable; 1.0.1 waits in the queue.
    app.upload_ok(&owner, wave("1.0.0")).await;
    app.drain().await;
    let pending = app.upload_ok(&owner, wave("1.0.1")).await;
    let platform = app.app.config.platforms[0].name.to_string();

    let tokens = [
        None,
        Some(maintainer),
        Some(owner),
        Some(worker),
        Some(app.operator.clone()),
    ];
    let mut users: Vec<Option<User>> = Vec::new();
    for token in &tokens {
        users.push(match token {
            Some(t) => holdq::service::users::authenticate(&app.app.db, t)
                .await
                .unwrap(),
            None => None,
        });
    }

    let routes = holdq::http::routes();
    assert!(routes.len() >= 20, "{routes:?}");
    let mut failures = Vec::new();
    for route in &routes {
        for (i, role) in ROLES.iter().enumerate() {
            let package = Some(Package {
                name: "wave",
                owned: *role == "owner",
            });
            let decision = authz::authorize(users[i].as_ref(), route.action, package);
            let (path, body) = request_for(route, pending, &platform);
            let mut req = app.http.request(route.method.clone(), app.url(&path));
            if let Some(t) = &tokens[i] {
                req = req.bearer_auth(t);
            }
            req = match body {
                Body::None => req,
                Body::Json(v) => req.json(&v),
                Body::Archive(bytes) => req.header("content-type", "application/gzip").body(bytes),
            };
            let resp = req.send().await.unwrap();
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            let as_decided = match &decision {
                Ok(()) => {
                    status != StatusCode::UNAUTHORIZED
                        && status != StatusCode::FORBIDDEN
                        && !text.contains("no such endpoint")
                }
                Err(authz::Denied::SignInRequired) => status == StatusCode::UNAUTHORIZED,
                Err(_) => status == StatusCode::FORBIDDEN,
            };
            if !as_decided {
                failures.push(format!(
                    "{} {} as {role}: the policy says {decision:?} ({:?}), the server answered {status} {text}",
                    route.method, route.path, route.action
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

async fn a_maintainer_reading_another_owners_upload_gets_its_state_but_no_logs_and_no_recipients(
    db: TestDb,
) {
    let app = TestApp::spawn(db).await;
    let ada = app.user("ada@example.org").await;
    let eve = app.user("eve@example.org").await;
    let id = app
        .upload_ok(
            &ada,
            package_building(
                "wave",
                "1.0.0",
                &[],
                "echo the-build-log-line; exit 3",
                None,
            ),
        )
        .await;
    app.drain().await;

    let whole = app
        .get(Some(&ada), &format!("/api/v1/uploads/{id}"))
        .await
        .body;
    assert_eq!(whole["state"], "rejected", "{whole:#}");
    assert!(
        whole.to_string().contains("the-build-log-line"),
        "{whole:#}"
    );
    assert!(whole.to_string().contains("ada@example.org"), "{whole:#}");

    let paths = [
        format!("/api/v1/uploads/{id}"),
        "/api/v1/uploads?package=wave".to_owned(),
    ];
    for path in &paths {
        let seen = app.get(Some(&eve), path).await;
        assert_eq!(seen.status, StatusCode::OK, "{path}: {:?}", seen.body);
        let view = if seen.body.is_array() {
            seen.body[0].clone()
        } else {
            seen.body.clone()
        };
        assert_eq!(view["state"], "rejected", "{path}: {view:#}");
        let text = view.to_string();
        assert!(!text.contains("the-build-log-line"), "{path}: {view:#}");
        assert!(
            !text.contains("example.org"),
            "no address in {path}: {view:#}"
        );
    }
    let seen = app
        .get(Some(&eve), &format!("/api/v1/uploads/{id}"))
        .await
        .body;
    assert!(!seen["checks"].as_array().unwrap().is_empty());
    assert!(!seen["emails"].as_array().unwrap().is_empty());
    assert!(seen["verdict"]["accepted"] == false, "{seen:#}");

    // What the tokens may do, as the server's policy says.
    let me = app.get(Some(&eve), "/api/v1/me").await.body;
    assert_eq!(me["email"], "eve@example.org");
    let may: Vec<&str> = me["may"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(may.contains(&"read_queue") && !may.contains(&"control_queue"));
    let mine = me["may_on_owned_packages"].to_string();
    assert!(mine.contains("read_upload_details"), "{me:#}");
    let operator = app.get(Some(&app.operator), "/api/v1/me").await.body;
    assert_eq!(
        operator["may"].as_array().unwrap().len(),
        Action::ALL.len(),
        "{operator:#}"
    );
}
