//! The per-package stable index checked from outside: the documents the
//! database stores, and what each should say rebuilt straight from the
//! database's tables by this module's own queries (not by the code that
//! writes them).

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sqlx::AnyPool;

/// Every document the database stores and serves (a primary's, or a
/// follower's copy of its primary's), by package: its bytes and the sha256
/// stored with them, which must be theirs.
pub async fn stored_bodies(pool: &AnyPool) -> BTreeMap<String, (String, String)> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT p.name, d.sha256, d.body FROM index_documents d \
         JOIN packages p ON p.id = d.package_id WHERE d.body IS NOT NULL \
         UNION ALL SELECT name, sha256, body FROM mirror_documents",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut out = BTreeMap::new();
    for (name, sha, body) in rows {
        let actual = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(body.as_bytes()));
        assert_eq!(sha, actual, "the stored sha256 of {name}'s document");
        assert!(
            out.insert(name.clone(), (sha, body)).is_none(),
            "{name} twice"
        );
    }
    out
}

/// [`stored_bodies`] parsed; each must be whole JSON.
pub async fn stored_documents(pool: &AnyPool) -> BTreeMap<String, Value> {
    stored_bodies(pool)
        .await
        .into_iter()
        .map(|(name, (_, body))| {
            let document: Value = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("the document of {name} is not whole JSON: {e}"));
            (name, document)
        })
        .collect()
}

/// The serial of the last change that names each package, from the log.
async fn last_changes(pool: &AnyPool) -> BTreeMap<String, (i64, Option<String>)> {
    let rows: Vec<(i64, String)> =
        sqlx::query_as("SELECT serial, packages FROM stable_changes ORDER BY serial")
            .fetch_all(pool)
            .await
            .unwrap();
    let mut last = BTreeMap::new();
    for (serial, packages) in rows {
        let packages: Vec<Value> = serde_json::from_str(&packages).unwrap();
        for p in packages {
            let sha = p["sha256"].as_str().map(String::from);
            last.insert(p["name"].as_str().unwrap().to_owned(), (serial, sha));
        }
    }
    last
}

type VersionRow = (String, String, String, i64, String, i64);

/// What every package's document should say, from the tables.
pub async fn expected_documents(pool: &AnyPool) -> BTreeMap<String, Value> {
    let packages: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT name, state, obsolete_reason, replacement FROM packages p \
         WHERE state <> 'removed' AND EXISTS (SELECT 1 FROM versions v WHERE v.package_id = p.id)",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let versions: Vec<VersionRow> = sqlx::query_as(
        "SELECT p.name, v.version, v.sha256, v.size_bytes, v.manifest, v.promoted_at \
         FROM versions v JOIN packages p ON p.id = v.package_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let pins: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT a.name, b.name, p.requirement, p.max_version FROM pins p \
         JOIN packages a ON a.id = p.dependent_id JOIN packages b ON b.id = p.dependency_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let last = last_changes(pool).await;
    let mut out = BTreeMap::new();
    for (name, state, reason, replacement) in packages {
        let mut list: Vec<&VersionRow> = versions.iter().filter(|v| v.0 == name).collect();
        list.sort_by_key(|v| semver::Version::parse(&v.1).unwrap());
        let list: Vec<Value> = list
            .into_iter()
            .map(|(n, version, sha, size, manifest, at)| {
                let manifest: Value = serde_json::from_str(manifest).unwrap();
                json!({
                    "version": version, "sha256": sha, "size_bytes": size,
                    "dependencies": manifest["dependencies"],
                    "archive": format!("archives/{n}/{n}-{version}.tar.gz"),
                    "promoted_at": holdq::service::format_time(*at),
                })
            })
            .collect();
        let mut document = json!({
            "name": name, "state": state, "versions": list,
            "serial": last.get(&name).map(|l| l.0).expect("every document was written by a change"),
        });
        if state == "obsolete" {
            document["obsolete"] = json!({ "reason": reason, "replacement": replacement });
        }
        let own: serde_json::Map<String, Value> = pins
            .iter()
            .filter(|p| p.0 == name)
            .map(|(_, dep, req, max)| (dep.clone(), json!(format!("{req}, <={max}"))))
            .collect();
        if !own.is_empty() {
            document["pins"] = Value::Object(own);
        }
        out.insert(name, document);
    }
    out
}

/// Every stored document says what the tables say, no other document is
/// there, each one's sha256 is the one its last change recorded, and the
/// log holds one change per serial up to the current one.
pub async fn assert_documents_match(pool: &AnyPool) {
    let expected = expected_documents(pool).await;
    let stored = stored_bodies(pool).await;
    assert_eq!(
        stored.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "the packages with a document"
    );
    let last = last_changes(pool).await;
    for (name, want) in &expected {
        let (sha, body) = &stored[name];
        let document: Value = serde_json::from_str(body).unwrap();
        assert_eq!(&document, want, "the document of {name}");
        assert_eq!(
            last[name].1.as_deref(),
            Some(sha.as_str()),
            "the hash of {name}'s document in its last change"
        );
    }
    assert_log_matches_serial(pool).await;
}

/// The changes log has exactly one row per serial, 1 through the current.
pub async fn assert_log_matches_serial(pool: &AnyPool) {
    let (serial,): (i64,) = sqlx::query_as("SELECT serial FROM stable_state WHERE id = 1")
        .fetch_one(pool)
        .await
        .unwrap();
    let serials: Vec<(i64,)> = sqlx::query_as("SELECT serial FROM stable_changes ORDER BY serial")
        .fetch_all(pool)
        .await
        .unwrap();
    let serials: Vec<i64> = serials.into_iter().map(|(s,)| s).collect();
    assert_eq!(
        serials,
        (1..=serial).collect::<Vec<_>>(),
        "one change per serial"
    );
}
