//! The web pages over plain HTTP (SPEC section 8a): sessions and CSRF, the
//! same policy as the API on the upload page, escaping, the package
//! website's search on both databases, and 404s (never 500s) on bad input.

use reqwest::StatusCode;

use crate::on_both_databases;
use crate::support::archives::{manifest, package_building, package_with_manifest};
use crate::support::web::WebClient;
use crate::support::{TestApp, TestDb};

on_both_databases!(
    a_maintainer_who_is_not_an_owner_sees_the_state_but_not_the_logs_on_the_page_and_the_api,
    signing_in_sets_an_http_only_session_that_signing_out_ends,
    a_form_without_a_valid_csrf_token_is_refused_403,
    an_operator_cancels_an_upload_through_the_form,
    search_finds_a_package_by_a_word_of_its_description_and_the_listing_pages,
    a_package_page_shows_versions_build_metadata_dependents_and_the_obsolete_banner,
    bad_input_answers_404_or_401_and_never_500,
    the_account_page_makes_a_token_once_and_revoking_a_token_ends_its_sessions,
    an_operator_changes_the_pass_mark_and_pauses_a_platform_through_the_forms,
    an_owner_obsoletes_a_package_after_a_dry_run_preview,
    a_public_queue_shows_states_to_anyone_but_never_logs,
);

/// An archive of `name` whose description is `description`.
fn described(name: &str, version: &str, description: &str, deps: &[(&str, &str)]) -> Vec<u8> {
    let text = manifest(name, version, deps).replace("A test package", description);
    package_with_manifest(&format!("{name}-{version}"), &text)
}

async fn a_maintainer_who_is_not_an_owner_sees_the_state_but_not_the_logs_on_the_page_and_the_api(
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
    let page = format!("/uploads/{id}");

    let mut owner = WebClient::new(&app);
    owner.sign_in(&ada).await;
    let seen = owner.get(&page).await;
    assert_eq!(seen.status, StatusCode::OK, "{}", seen.body);
    assert!(seen.body.contains("rejected: build@"), "{}", seen.body);
    assert!(seen.body.contains("the-build-log-line"), "{}", seen.body);
    assert!(seen.body.contains("ada@example.org"), "{}", seen.body);
    let log = owner
        .get(&format!(
            "{page}/checks/build@{}/log",
            app.app.config.platforms[0].name
        ))
        .await;
    assert_eq!(log.status, StatusCode::OK, "{}", log.body);
    assert!(log.body.contains("the-build-log-line"));

    let mut other = WebClient::new(&app);
    other.sign_in(&eve).await;
    let seen = other.get(&page).await;
    assert_eq!(seen.status, StatusCode::OK, "{}", seen.body);
    assert!(seen.body.contains("rejected: build@"), "{}", seen.body);
    assert!(!seen.body.contains("the-build-log-line"), "{}", seen.body);
    assert!(!seen.body.contains("ada@example.org"), "{}", seen.body);
    assert!(seen.body.contains("score"), "{}", seen.body);
    let log = other
        .get(&format!(
            "{page}/checks/build@{}/log",
            app.app.config.platforms[0].name
        ))
        .await;
    assert_eq!(log.status, StatusCode::FORBIDDEN, "{}", log.body);
    assert!(!log.body.contains("the-build-log-line"));

    // The API decides the same, through the same policy.
    let api = app.get(Some(&eve), &format!("/api/v1/uploads/{id}")).await;
    assert_eq!(api.status, StatusCode::OK);
    assert_eq!(api.body["state"], "rejected");
    assert!(!api.body.to_string().contains("the-build-log-line"));
    assert!(!api.body.to_string().contains("example.org"));

    // Not signed in: sign in first (the queue is not public by default).
    let mut anonymous = WebClient::new(&app);
    let refused = anonymous.get(&page).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(refused.body.contains("name=\"token\""), "{}", refused.body);
}

async fn signing_in_sets_an_http_only_session_that_signing_out_ends(db: TestDb) {
    let app = TestApp::spawn(db.clone()).await;
    let ada = app.user("ada@example.org").await;
    let mut browser = WebClient::new(&app);
    let bad = {
        let form = browser.get("/signin").await;
        let csrf = form.csrf();
        browser
            .post("/signin", &[("token", "hq_not-a-token"), ("csrf", &csrf)])
            .await
    };
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    assert!(bad.body.contains("not valid"), "{}", bad.body);

    let form = browser.get("/signin").await;
    let csrf = form.csrf();
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = no_redirects
        .post(app.url("/signin"))
        .header(
            "cookie",
            format!("holdq_csrf={}", browser.cookie("holdq_csrf").unwrap()),
        )
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            serde_urlencoded::to_string([
                ("token", ada.as_str()),
                ("csrf", &csrf),
                ("next", "/queue"),
            ])
            .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()["location"], "/queue");
    let set: Vec<String> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let session = set
        .iter()
        .find(|c| c.starts_with("holdq_session="))
        .expect("a session cookie");
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Lax"),
        "{session}"
    );
    assert!(!session.contains("Secure"), "plain http: {session}");
    // Only the id's hash is stored.
    let value = session
        .trim_start_matches("holdq_session=")
        .split(';')
        .next()
        .unwrap();
    let (stored,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM web_sessions WHERE id_hash = $1")
        .bind(value)
        .fetch_one(app.app.db.pool())
        .await
        .unwrap();
    assert_eq!(stored, 0, "the cookie's value is not stored in clear");

    browser.sign_in(&ada).await;
    let queue = browser.get("/queue").await;
    assert_eq!(queue.status, StatusCode::OK, "{}", queue.body);
    assert!(queue.body.contains("ada@example.org"), "{}", queue.body);
    let csrf = queue.csrf();
    let out = browser.post("/signout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER, "{}", out.body);
    assert_eq!(browser.get("/queue").await.status, StatusCode::UNAUTHORIZED);

    // A session past web.session_ttl is not honoured.
    let short = TestApp::spawn_with(db, |c| c.web.session_ttl = std::time::Duration::ZERO).await;
    let token = short.user("ada@example.org").await;
    let mut browser = WebClient::new(&short);
    browser.sign_in(&token).await;
    assert_eq!(browser.get("/queue").await.status, StatusCode::UNAUTHORIZED);
}

async fn a_form_without_a_valid_csrf_token_is_refused_403(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let id = app
        .upload_ok(
            &app.operator,
            package_building("wave", "1.0.0", &[], "true", None),
        )
        .await;
    let mut browser = WebClient::new(&app);
    browser.sign_in(&app.operator).await;
    let cancel = format!("/uploads/{id}/cancel");
    for fields in [
        vec![("why", "no token")],
        vec![("why", "wrong token"), ("csrf", "0123")],
    ] {
        let refused = browser.post(&cancel, &fields).await;
        assert_eq!(
            refused.status,
            StatusCode::FORBIDDEN,
            "{fields:?}: {}",
            refused.body
        );
        assert!(refused.body.contains("CSRF"), "{}", refused.body);
    }
    let view = app.upload_view(id).await;
    assert_eq!(view["state"], "queued", "nothing was cancelled: {view:#}");

    // The sign-in form is guarded too (its token is a cookie's value).
    let mut stranger = WebClient::new(&app);
    let refused = stranger
        .post(
            "/signin",
            &[("token", app.operator.as_str()), ("csrf", "forged")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
}

async fn an_operator_cancels_an_upload_through_the_form(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let ada = app.user("ada@example.org").await;
    let id = app
        .upload_ok(&ada, package_building("wave", "1.0.0", &[], "true", None))
        .await;
    let page = format!("/uploads/{id}");

    let mut maintainer = WebClient::new(&app);
    maintainer.sign_in(&ada).await;
    let seen = maintainer.get(&page).await;
    assert!(
        !seen.body.contains("id=\"cancel\""),
        "no cancel form for a maintainer"
    );
    let csrf = seen.csrf();
    let refused = maintainer
        .post(
            &format!("{page}/cancel"),
            &[("why", "mine"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);

    let mut operator = WebClient::new(&app);
    operator.sign_in(&app.operator).await;
    let seen = operator.get(&page).await;
    assert!(seen.body.contains("id=\"cancel\""), "{}", seen.body);
    let csrf = seen.csrf();
    let done = operator
        .post(
            &format!("{page}/cancel"),
            &[("why", "broken mirror"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(done.location.as_deref(), Some(page.as_str()));
    let after = operator.get(&page).await;
    assert!(
        after
            .body
            .contains("cancelled by an operator (broken mirror)"),
        "{}",
        after.body
    );
    assert_eq!(app.upload_view(id).await["state"], "rejected");
}

async fn search_finds_a_package_by_a_word_of_its_description_and_the_listing_pages(db: TestDb) {
    let app = TestApp::spawn(db).await;
    app.upload_ok(
        &app.operator,
        described("sound-goodizer", "1.0.0", "Makes sound good", &[]),
    )
    .await;
    app.upload_ok(
        &app.operator,
        described(
            "libwave",
            "2.1.0",
            "Reads <script>alert(1)</script> WAV files",
            &[],
        ),
    )
    .await;
    for i in 0..55 {
        app.upload_ok(
            &app.operator,
            described(&format!("filler{i:02}"), "0.1.0", "Nothing to see", &[]),
        )
        .await;
    }
    app.drain().await;
    let mut browser = WebClient::new(&app);

    let found = browser.get("/packages?q=sound").await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.body);
    assert!(
        found.body.contains("/packages/sound-goodizer"),
        "{}",
        found.body
    );
    assert!(!found.body.contains("/packages/libwave"), "{}", found.body);
    // By a word of the description, by a prefix, by a part of the name.
    for q in ["wav", "WAV files", "reads", "goodizer"] {
        let found = browser
            .get(&format!("/packages?q={}", q.replace(' ', "+")))
            .await;
        let wanted = if q == "goodizer" {
            "sound-goodizer"
        } else {
            "libwave"
        };
        assert!(
            found.body.contains(&format!("/packages/{wanted}")),
            "{q}: {}",
            found.body
        );
    }
    // A description stays text.
    assert!(!found.body.contains("<script>"), "{}", found.body);
    let page = browser.get("/packages?q=alert").await;
    assert!(
        page.body.contains("&lt;script&gt;alert(1)"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<script>"), "{}", page.body);
    // Query syntax is not the index's: it finds nothing, and does not fail.
    for q in ["%22%2A%20OR", "NEAR(", "a%26b%7C!", "%27%3B--"] {
        let answered = browser.get(&format!("/packages?q={q}")).await;
        assert_eq!(answered.status, StatusCode::OK, "{q}: {}", answered.body);
    }

    // 57 packages: 50 on the first page, the rest after the last one.
    let first = browser.get("/packages").await;
    assert!(first.body.contains("57 stable packages"), "{}", first.body);
    assert_eq!(
        first.body.matches("<tr><td><a href=\"/packages/").count(),
        50
    );
    let next = first
        .body
        .split("rel=\"next\" href=\"")
        .nth(1)
        .expect("a next page");
    let next = next[..next.find('"').unwrap()].replace("&amp;", "&");
    let second = browser.get(&next).await;
    assert_eq!(
        second.body.matches("<tr><td><a href=\"/packages/").count(),
        7,
        "{next}"
    );
    assert!(second.body.contains("/packages/sound-goodizer"));
}

async fn a_package_page_shows_versions_build_metadata_dependents_and_the_obsolete_banner(
    db: TestDb,
) {
    let app = TestApp::spawn(db).await;
    let build = "mkdir -p $HOLDQ_DESTDIR/usr/bin && echo x > $HOLDQ_DESTDIR/usr/bin/wavectl";
    app.upload_ok(
        &app.operator,
        package_building("libwave", "2.1.0", &[], build, None),
    )
    .await;
    app.drain().await;
    app.upload_ok(
        &app.operator,
        package_building("player", "1.0.0", &[("libwave", "^2.1")], "true", None),
    )
    .await;
    app.drain().await;
    let obsoleted = app
        .http
        .post(app.url("/api/v1/packages/libwave/obsolete"))
        .bearer_auth(&app.operator)
        .json(&serde_json::json!({ "reason": "unmaintained upstream" }))
        .send()
        .await
        .unwrap();
    assert!(
        obsoleted.status().is_success(),
        "{:?}",
        obsoleted.text().await
    );

    let mut browser = WebClient::new(&app);
    let page = browser.get("/packages/libwave").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("id=\"obsolete\""), "{}", page.body);
    assert!(page.body.contains("unmaintained upstream"), "{}", page.body);
    assert!(page.body.contains("2.1.0"));
    assert!(
        page.body.contains("usr&#x2f;bin&#x2f;wavectl"),
        "executables: {}",
        page.body
    );
    assert!(
        page.body.contains("/packages/player"),
        "dependents: {}",
        page.body
    );
    let player = browser.get("/packages/player").await;
    assert!(player.body.contains("/packages/libwave"), "{}", player.body);
    assert!(
        player.body.contains("→ 2.1.0"),
        "resolved version: {}",
        player.body
    );
    assert!(
        player.body.contains("&lt;=2.1.0"),
        "the pin: {}",
        player.body
    );
}

async fn bad_input_answers_404_or_401_and_never_500(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let ada = app.user("ada@example.org").await;
    let mut browser = WebClient::new(&app);
    for (path, status) in [
        ("/packages/no-such-package", StatusCode::NOT_FOUND),
        ("/packages/NOT%20A%20NAME", StatusCode::NOT_FOUND),
        ("/packages?page=-3&after=%00", StatusCode::OK),
        ("/packages?q=%FF%FE", StatusCode::OK),
        ("/uploads/1", StatusCode::UNAUTHORIZED),
        ("/nowhere", StatusCode::NOT_FOUND),
    ] {
        let got = browser.get(path).await;
        assert_eq!(got.status, status, "{path}: {}", got.body);
    }
    browser.sign_in(&ada).await;
    for (path, status) in [
        ("/uploads/999999", StatusCode::NOT_FOUND),
        ("/uploads/abc", StatusCode::NOT_FOUND),
        ("/uploads/-1", StatusCode::NOT_FOUND),
        ("/uploads/99999999999999999999999", StatusCode::NOT_FOUND),
        ("/uploads/999999/checks/build@x/log", StatusCode::NOT_FOUND),
        ("/queue?mine=%ZZ", StatusCode::OK),
        ("/workers", StatusCode::OK),
        ("/", StatusCode::OK),
    ] {
        let got = browser.get(path).await;
        assert_eq!(got.status, status, "{path}: {}", got.body);
        assert!(
            got.body.contains("<html"),
            "{path} answers a page: {}",
            got.body
        );
    }
    let id = app
        .upload_ok(&ada, package_building("wave", "1.0.0", &[], "true", None))
        .await;
    let got = browser
        .get(&format!("/uploads/{id}/checks/no-such-check/log"))
        .await;
    assert_eq!(got.status, StatusCode::NOT_FOUND, "{}", got.body);
}

async fn the_account_page_makes_a_token_once_and_revoking_a_token_ends_its_sessions(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let ada = app.user("ada@example.org").await;
    app.upload_ok(&ada, package_building("wave", "1.0.0", &[], "true", None))
        .await;
    let mut browser = WebClient::new(&app);
    browser.sign_in(&ada).await;
    let page = browser.get("/account").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body.contains("/packages/wave"),
        "owned packages: {}",
        page.body
    );
    assert_eq!(page.body.matches("/revoke\"").count(), 1, "{}", page.body);

    let made = browser
        .post("/account/tokens", &[("csrf", &page.csrf())])
        .await;
    assert_eq!(made.status, StatusCode::OK, "{}", made.body);
    let at = made
        .body
        .find("<pre class=\"log\">hq_")
        .expect("the new token, shown once");
    let token = &made.body[at + "<pre class=\"log\">".len()..];
    let token = token[..token.find('<').unwrap()].to_owned();
    assert_eq!(
        app.get(Some(&token), "/api/v1/me").await.status,
        StatusCode::OK
    );
    let again = browser.get("/account").await;
    assert!(!again.body.contains(&token), "shown only once");
    assert_eq!(again.body.matches("/revoke\"").count(), 2);

    // Revoke the token this session signed in with: the session ends.
    let first = again
        .body
        .split("action=\"/account/tokens/")
        .nth(1)
        .unwrap();
    let first_id = &first[..first.find('/').unwrap()];
    let done = browser
        .post(
            &format!("/account/tokens/{first_id}/revoke"),
            &[("csrf", &again.csrf())],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(
        app.get(Some(&ada), "/api/v1/me").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        browser.get("/account").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get(Some(&token), "/api/v1/me").await.status,
        StatusCode::OK
    );
}

async fn an_operator_changes_the_pass_mark_and_pauses_a_platform_through_the_forms(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let ada = app.user("ada@example.org").await;
    let mut maintainer = WebClient::new(&app);
    maintainer.sign_in(&ada).await;
    let page = maintainer.get("/passmark").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        !page.body.contains("id=\"change\""),
        "no form for a maintainer"
    );
    let refused = maintainer
        .post(
            "/passmark",
            &[
                ("key", "threshold"),
                ("value", "0.5"),
                ("why", "x"),
                ("csrf", &page.csrf()),
            ],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);

    let mut operator = WebClient::new(&app);
    operator.sign_in(&app.operator).await;
    let page = operator.get("/passmark").await;
    let bad = operator
        .post(
            "/passmark",
            &[
                ("key", "threshold"),
                ("value", "2"),
                ("why", "x"),
                ("csrf", &page.csrf()),
            ],
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    assert!(bad.body.contains("between 0 and 1"), "{}", bad.body);
    let done = operator
        .post(
            "/passmark",
            &[
                ("key", "threshold"),
                ("value", "0.75"),
                ("why", "flaky farm"),
                ("csrf", &page.csrf()),
            ],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let page = operator.get("/passmark").await;
    assert!(
        page.body.contains("flaky farm") && page.body.contains("0.75"),
        "{}",
        page.body
    );

    let platform = app.app.config.platforms[0].name.to_string();
    let workers = operator.get("/workers").await;
    let paused = operator
        .post(
            &format!("/platforms/{platform}/pause"),
            &[("csrf", &workers.csrf())],
        )
        .await;
    assert_eq!(paused.status, StatusCode::SEE_OTHER, "{}", paused.body);
    let workers = operator.get("/workers").await;
    assert!(workers.body.contains("Resume"), "{}", workers.body);
    let seen = maintainer.get("/workers").await;
    assert!(
        seen.body.contains("paused") && !seen.body.contains("Resume"),
        "{}",
        seen.body
    );
}

async fn an_owner_obsoletes_a_package_after_a_dry_run_preview(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let ada = app.user("ada@example.org").await;
    let eve = app.user("eve@example.org").await;
    app.upload_ok(
        &ada,
        package_building("libwave", "2.1.0", &[], "true", None),
    )
    .await;
    app.drain().await;
    app.upload_ok(
        &eve,
        package_building("player", "1.0.0", &[("libwave", "^2.1")], "true", None),
    )
    .await;
    app.drain().await;

    let mut other = WebClient::new(&app);
    other.sign_in(&eve).await;
    let page = other.get("/packages/libwave").await;
    assert!(
        !page.body.contains("id=\"obsolete-form\""),
        "eve does not own libwave"
    );
    let refused = other
        .post(
            "/packages/libwave/obsolete",
            &[("reason", "mine now"), ("csrf", &page.csrf())],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);

    let mut owner = WebClient::new(&app);
    owner.sign_in(&ada).await;
    let page = owner.get("/packages/libwave").await;
    assert!(page.body.contains("id=\"obsolete-form\""), "{}", page.body);
    let preview = owner
        .post(
            "/packages/libwave/obsolete",
            &[
                ("reason", "use libsound"),
                ("replacement", ""),
                ("csrf", &page.csrf()),
            ],
        )
        .await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.body);
    assert!(
        preview.body.contains("/packages/player"),
        "the pin it would place: {}",
        preview.body
    );
    assert!(preview.body.contains("&lt;=2.1.0"), "{}", preview.body);
    let still = owner.get("/packages/libwave").await;
    assert!(
        !still.body.contains("id=\"obsolete\""),
        "a dry run changes nothing"
    );

    let done = owner
        .post(
            "/packages/libwave/obsolete",
            &[
                ("reason", "use libsound"),
                ("replacement", ""),
                ("confirm", "yes"),
                ("csrf", &preview.csrf()),
            ],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let after = owner.get("/packages/libwave").await;
    assert!(
        after.body.contains("id=\"obsolete\"") && after.body.contains("use libsound"),
        "{}",
        after.body
    );
}

async fn a_public_queue_shows_states_to_anyone_but_never_logs(db: TestDb) {
    let app = TestApp::spawn_with(db, |c| c.web.public_queue = true).await;
    let ada = app.user("ada@example.org").await;
    let id = app
        .upload_ok(
            &ada,
            package_building("wave", "1.0.0", &[], "echo secret-log-line; exit 1", None),
        )
        .await;
    app.drain().await;
    let mut anyone = WebClient::new(&app);
    let page = anyone.get(&format!("/uploads/{id}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("rejected: build@"), "{}", page.body);
    assert!(!page.body.contains("secret-log-line") && !page.body.contains("ada@example.org"));
    let queue = anyone.get("/").await;
    assert!(
        queue.body.contains(&format!("/uploads/{id}")),
        "recent verdicts: {}",
        queue.body
    );
    let label = format!("build@{}", app.app.config.platforms[0].name);
    let log = anyone
        .get(&format!("/uploads/{id}/checks/{label}/log"))
        .await;
    assert_eq!(log.status, StatusCode::UNAUTHORIZED);
    // The API answers the same without a token.
    let api = app.get(None, &format!("/api/v1/uploads/{id}")).await;
    assert_eq!(api.status, StatusCode::OK, "{:?}", api.body);
    assert!(!api.body.to_string().contains("secret-log-line"));
    assert_eq!(app.get(None, "/api/v1/queue").await.status, StatusCode::OK);
}
