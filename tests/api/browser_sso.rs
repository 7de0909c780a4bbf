//! Sign-in by redirect in a real headless Chromium: a third-party SPA on its own origin runs
//! authorization code + PKCE with nothing but the platform, the browser fills the hosted login
//! and consent pages, follows the redirect back past the pages' CSP, and the SPA exchanges the
//! code cross-origin (CORS). A second sign-in then needs no page at all (single sign-on and a
//! remembered consent).

use std::time::Duration;

use fantoccini::Locator;

use crate::browser_e2e::{browser, start_driver, wait_text};
use crate::helpers::{Backend, PASSWORD, free_port, spawn_app_with};

/// The SPA's page on `127.0.0.1:<port>` (`/` and `/callback`), served until the test ends.
async fn serve_spa(issuer: &str, client_id: &str) -> String {
    let page = include_str!("../fixtures/code_flow_spa.html")
        .replace("__ISSUER__", issuer)
        .replace("__CLIENT_ID__", client_id);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let page: &'static str = Box::leak(page.into_boxed_str());
    let html = move || async move { axum::response::Html(page) };
    let router = axum::Router::new()
        .route("/", axum::routing::get(html))
        .route("/callback", axum::routing::get(html));
    tokio::spawn(async move { axum::serve(listener, router).await });
    origin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_party_spa_signs_in_through_the_hosted_pages_in_chromium() {
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    // The SPA's origin must be known to the issuer's config before it starts: bind it first.
    let spa = serve_spa(&issuer, "gallery").await;
    let (issuer_for_config, spa_for_config) = (issuer.clone(), spa.clone());
    let app = spawn_app_with(Backend::Embedded, move |c| {
        c.text = c
            .text
            .replace("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{port}\""))
            .replace("issuer = \"http://127.0.0.1\"", &format!("issuer = \"{issuer_for_config}\""));
        c.text.push_str(&format!(
            "\n[[clients]]\nid = \"gallery\"\ntype = \"public\"\nname = \"Gallery\"\ngrants = [\"authorization_code\", \"refresh_token\"]\nredirect_uris = [\"{spa_for_config}/callback\"]\nallowed_origins = [\"{spa_for_config}\"]\nscopes = [\"openid\", \"photos:read\"]\nconsent = \"once\"\n"
        ));
    })
    .await;
    let alice = app.add_user_with_scopes("alice", &["photos:read"]).await;
    let driver = start_driver().await;
    let profile = tempfile::tempdir().unwrap();
    let page = browser(&driver, profile.path()).await;

    page.goto(&format!("{spa}/")).await.unwrap();
    page.find(Locator::Id("sign-in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The hosted login page, on the issuer's origin.
    let username = wait_for(&page, "input[name=username]").await;
    assert!(
        page.current_url()
            .await
            .unwrap()
            .as_str()
            .starts_with(&issuer)
    );
    username.send_keys("alice").await.unwrap();
    page.find(Locator::Css("input[name=password]"))
        .await
        .unwrap()
        .send_keys(PASSWORD)
        .await
        .unwrap();
    page.find(Locator::Css("button[value=login]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The consent page names the client and the scopes in words.
    let allow = wait_for(&page, "button[value=allow]").await;
    let body = page
        .find(Locator::Css("main"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.contains("Allow Gallery?") && body.contains("photos:read"),
        "{body}"
    );
    allow.click().await.unwrap();
    // Back on the SPA, which exchanged the code cross-origin.
    let status = wait_text(&page, "status", |t| {
        t.starts_with("signed in") || t.contains("error")
    })
    .await;
    assert_eq!(
        status,
        format!(
            "signed in as {} with openid photos:read and a refresh token",
            alice.id
        )
    );

    // Again: single sign-on and the remembered consent, no page in between.
    page.goto(&format!("{spa}/")).await.unwrap();
    page.find(Locator::Id("sign-in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let status = wait_text(&page, "status", |t| {
        t.starts_with("signed in") || t.contains("error")
    })
    .await;
    assert!(status.starts_with("signed in as"), "{status}");
    page.close().await.unwrap();
}

/// Waits (bounded) for an element to appear.
async fn wait_for(page: &fantoccini::Client, css: &str) -> fantoccini::elements::Element {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(element) = page.find(Locator::Css(css)).await {
            return element;
        }
        assert!(std::time::Instant::now() < deadline, "{css} never appeared");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// oidc-client-ts, as it ships, in a SPA on its own origin in Chromium: the sign-in redirect
/// through the hosted login page, the ID token and UserInfo, a silent renew by refresh token,
/// and the sign-out redirect through the end-session endpoint, after which the browser must
/// sign in again. `.ci/run` installs it (`npm ci` in `tests/fixtures/openid-client`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_client_ts_signs_in_renews_and_signs_out_in_chromium() {
    let library = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/openid-client/node_modules/oidc-client-ts/dist/browser/oidc-client-ts.min.js"
    );
    let library: &'static str = Box::leak(
        std::fs::read_to_string(library)
            .expect("oidc-client-ts must be installed: npm ci --prefix tests/fixtures/openid-client (.ci/run does)")
            .into_boxed_str(),
    );
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let page: &'static str = Box::leak(
        include_str!("../fixtures/oidc_client_ts_spa.html")
            .replace("__ISSUER__", &issuer)
            .replace("__CLIENT_ID__", "portal")
            .into_boxed_str(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let spa = format!("http://{}", listener.local_addr().unwrap());
    let html = move || async move { axum::response::Html(page) };
    let script = move || async move {
        (
            [(axum::http::header::CONTENT_TYPE, "text/javascript")],
            library,
        )
    };
    let router = axum::Router::new()
        .route("/", axum::routing::get(html))
        .route("/callback", axum::routing::get(html))
        .route("/signed-out", axum::routing::get(html))
        .route("/oidc-client-ts.min.js", axum::routing::get(script));
    tokio::spawn(async move { axum::serve(listener, router).await });

    let spa_for_config = spa.clone();
    let app = spawn_app_with(Backend::Embedded, move |c| {
        c.text = c
            .text
            .replace("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{port}\""))
            .replace("issuer = \"http://127.0.0.1\"", &format!("issuer = \"http://127.0.0.1:{port}\""));
        c.text.push_str(&format!(
            "\n[[clients]]\nid = \"portal\"\ntype = \"public\"\nname = \"Portal\"\ngrants = [\"authorization_code\", \"refresh_token\"]\nredirect_uris = [\"{spa_for_config}/callback\"]\npost_logout_redirect_uris = [\"{spa_for_config}/signed-out\"]\nallowed_origins = [\"{spa_for_config}\"]\n"
        ));
    })
    .await;
    let alice = app.add_user("alice", PASSWORD).await;
    let driver = start_driver().await;
    let profile = tempfile::tempdir().unwrap();
    let page = browser(&driver, profile.path()).await;
    let done = |t: &str| !t.starts_with("signed out") || t.contains("issuer");
    let settled = |t: &str| {
        t.starts_with("signed in")
            || t.starts_with("renewed")
            || t.contains("error")
            || t.contains("issuer")
    };

    page.goto(&format!("{spa}/")).await.unwrap();
    page.find(Locator::Id("sign-in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(&page, "input[name=username]")
        .await
        .send_keys("alice")
        .await
        .unwrap();
    page.find(Locator::Css("input[name=password]"))
        .await
        .unwrap()
        .send_keys(PASSWORD)
        .await
        .unwrap();
    page.find(Locator::Css("button[value=login]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let status = wait_text(&page, "status", |t| done(t) && settled(t)).await;
    assert_eq!(status, format!("signed in as {} (alice)", alice.id));

    page.find(Locator::Id("renew"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let status = wait_text(&page, "status", |t| {
        t.starts_with("renewed") || t.contains("error")
    })
    .await;
    assert_eq!(status, format!("renewed {} with a refresh token", alice.id));

    page.find(Locator::Id("sign-out"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let status = wait_text(&page, "status", |t| {
        t.contains("issuer") || t.contains("error")
    })
    .await;
    assert_eq!(status, "signed out by the issuer");
    assert!(
        page.current_url()
            .await
            .unwrap()
            .as_str()
            .starts_with(&format!("{spa}/signed-out"))
    );

    // The sign-on ended: signing in again shows the login page.
    page.goto(&format!("{spa}/")).await.unwrap();
    page.find(Locator::Id("sign-in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(&page, "input[name=username]").await;
    page.close().await.unwrap();
}
