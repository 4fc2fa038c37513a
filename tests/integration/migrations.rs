//! The two migration sets stay in step: same names, same order.

fn names(backend: &str) -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn sqlite_and_postgres_migrations_have_the_same_names() {
    let sqlite = names("sqlite");
    assert!(!sqlite.is_empty());
    assert_eq!(sqlite, names("postgres"));
}

crate::on_both_databases!(a_state_written_by_a_newer_server_is_an_error_naming_it);

/// A rolling upgrade: a newer server wrote a state this build does not
/// know. Reading it is an error that names the column and the word (for
/// the operator's log), never a panic.
async fn a_state_written_by_a_newer_server_is_an_error_naming_it(db: crate::support::TestDb) {
    use crate::support::archives::package_building;
    let app = crate::support::TestApp::spawn(db).await;
    let ada = app.user("ada@example.org").await;
    let id = app
        .upload_ok(&ada, package_building("newer", "1.0.0", &[], "true", None))
        .await;
    sqlx::query("UPDATE uploads SET state = 'archived' WHERE id = $1")
        .bind(id)
        .execute(app.app.db.pool())
        .await
        .unwrap();
    let mut conn = app.app.db.pool().acquire().await.unwrap();
    let err = holdq::db::uploads::get(&mut conn, id).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("\"state\"") && text.contains("unknown upload state \"archived\""),
        "{text}"
    );
    let answer = app.get(Some(&ada), &format!("/api/v1/uploads/{id}")).await;
    assert_eq!(
        answer.status.as_u16(),
        500,
        "the server answers, it does not crash"
    );
    app.assert_serving().await;
}
