//! DPoP (RFC 9449) end to end: proofs made by an independent implementation (jsonwebtoken, on
//! keys it did not make) at the issuer's token endpoints, the binding of families and access
//! tokens, and the resource-server half in both example servers (actix and axum).

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Backend, PASSWORD, TestApp, claims_of, hash, spawn_app_with};

/// The issuer URL of the test config: proofs name it, not the socket the test talks to.
const ISSUER: &str = "http://127.0.0.1";

/// A client's DPoP key, and proofs signed with it by jsonwebtoken.
pub struct DpopKey {
    alg: Algorithm,
    key: EncodingKey,
    jwk: Jwk,
}

impl DpopKey {
    pub fn es256() -> DpopKey {
        let der =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        DpopKey::new(Algorithm::ES256, EncodingKey::from_ec_der(der.as_ref()))
    }

    fn ed25519() -> DpopKey {
        let der = Ed25519KeyPair::generate_pkcs8v1(&SystemRandom::new()).unwrap();
        DpopKey::new(Algorithm::EdDSA, EncodingKey::from_ed_der(der.as_ref()))
    }

    fn rsa(alg: Algorithm) -> DpopKey {
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let pkcs8 =
            aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).unwrap();
        DpopKey::new(alg, EncodingKey::from_rsa_der(&pkcs1_of(pkcs8.as_ref())))
    }

    fn new(alg: Algorithm, key: EncodingKey) -> DpopKey {
        let jwk = Jwk::from_encoding_key(&key, alg).unwrap();
        DpopKey { alg, key, jwk }
    }

    /// The RFC 7638 thumbprint as jsonwebtoken computes it.
    pub fn jkt(&self) -> String {
        self.jwk.thumbprint(ThumbprintHash::SHA256).unwrap()
    }

    /// A fresh proof for `method url`, with `ath` of `access_token` when given.
    pub fn proof(&self, method: &str, url: &str, access_token: Option<&str>) -> String {
        self.proof_with(method, url, access_token, |_, _| {})
    }

    /// A proof whose header and claims `tweak` may change first.
    pub fn proof_with(
        &self,
        method: &str,
        url: &str,
        access_token: Option<&str>,
        tweak: impl FnOnce(&mut Header, &mut Value),
    ) -> String {
        let mut header = Header::new(self.alg);
        header.typ = Some("dpop+jwt".into());
        header.jwk = Some(self.jwk.clone());
        let mut claims = json!({
            "jti": uuid::Uuid::new_v4().to_string(),
            "htm": method,
            "htu": url,
            "iat": now_secs(),
        });
        if let Some(token) = access_token {
            claims["ath"] = json!(ath(token));
        }
        tweak(&mut header, &mut claims);
        jsonwebtoken::encode(&header, &claims, &self.key).unwrap()
    }
}

pub fn ath(token: &str) -> String {
    B64.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        token.as_bytes(),
    ))
}

fn now_secs() -> i64 {
    latchkey::clock::system_ms() / 1000
}

/// PKCS#1 `RSAPrivateKey` inside a PKCS#8 `PrivateKeyInfo` (jsonwebtoken's RSA input).
fn pkcs1_of(pkcs8: &[u8]) -> Vec<u8> {
    // SEQUENCE { INTEGER version, SEQUENCE algorithm, OCTET STRING privateKey }
    fn header(bytes: &[u8], at: usize) -> (usize, usize) {
        match bytes[at + 1] {
            l if l < 0x80 => (usize::from(l), 2),
            0x81 => (usize::from(bytes[at + 2]), 3),
            0x82 => (
                (usize::from(bytes[at + 2]) << 8) | usize::from(bytes[at + 3]),
                4,
            ),
            _ => panic!("unexpected DER length"),
        }
    }
    let (_, outer) = header(pkcs8, 0);
    let mut at = outer;
    for _ in 0..2 {
        let (len, h) = header(pkcs8, at);
        at += h + len;
    }
    assert_eq!(pkcs8[at], 0x04);
    let (len, h) = header(pkcs8, at);
    pkcs8[at + h..at + h + len].to_vec()
}

async fn dpop_app(backend: Backend) -> TestApp {
    let secret = hash("worker-secret-0123456789abcdef").await;
    let app = spawn_app_with(backend, move |c| {
        c.text.push_str(&format!(
            r#"

[[clients]]
id = "strict"
type = "public"
grants = ["refresh_token"]
require_dpop = true

[[clients]]
id = "nonced"
type = "public"
grants = ["refresh_token"]
require_dpop = true
dpop_nonce = true

[[clients]]
id = "worker"
type = "confidential"
secret_hash = "{secret}"
grants = ["client_credentials", "password", "refresh_token"]
introspect = true
"#
        ));
    })
    .await;
    app.add_user("alice", PASSWORD).await;
    app
}

async fn login(app: &TestApp, client: Option<&str>, proofs: &[String]) -> Response {
    let mut body = json!({"username": "alice", "password": PASSWORD});
    if let Some(client) = client {
        body["client_id"] = json!(client);
    }
    let mut request = app.client.post(app.url("/auth/login")).json(&body);
    for proof in proofs {
        request = request.header("DPoP", proof);
    }
    request.send().await.unwrap()
}

async fn refresh(app: &TestApp, token: &str, proof: Option<String>) -> Response {
    let mut request = app
        .client
        .post(app.url("/auth/refresh"))
        .json(&json!({"refresh_token": token}));
    if let Some(proof) = proof {
        request = request.header("DPoP", proof);
    }
    request.send().await.unwrap()
}

async fn error_of(response: Response) -> (StatusCode, String) {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    (
        status,
        body["error"].as_str().unwrap_or_default().to_owned(),
    )
}

fn login_url() -> String {
    format!("{ISSUER}/auth/login")
}

fn refresh_url() -> String {
    format!("{ISSUER}/auth/refresh")
}

#[tokio::test]
async fn proofs_from_an_independent_implementation_bind_the_tokens_they_come_with() {
    let app = dpop_app(Backend::Embedded).await;
    let keys = [
        DpopKey::es256(),
        DpopKey::rsa(Algorithm::RS256),
        DpopKey::rsa(Algorithm::PS256),
        DpopKey::ed25519(),
    ];
    for key in &keys {
        // §4.3: htu is compared without query and fragment.
        let proof = key.proof("POST", &format!("{}?from=app#x", login_url()), None);
        let response = login(&app, None, &[proof]).await;
        assert_eq!(response.status(), 200, "{:?}", key.alg);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["token_type"], "DPoP");
        let claims = claims_of(body["access_token"].as_str().unwrap());
        assert_eq!(claims["cnf"]["jkt"], key.jkt(), "{:?}", key.alg);

        // Every refresh of the family proves the same key and stays bound.
        let mut token = body["refresh_token"].as_str().unwrap().to_owned();
        for _ in 0..2 {
            let response =
                refresh(&app, &token, Some(key.proof("POST", &refresh_url(), None))).await;
            assert_eq!(response.status(), 200, "{:?}", key.alg);
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["token_type"], "DPoP");
            let claims = claims_of(body["access_token"].as_str().unwrap());
            assert_eq!(claims["cnf"]["jkt"], key.jkt());
            token = body["refresh_token"].as_str().unwrap().to_owned();
        }
    }
    // Without a proof nothing changes: a bearer token.
    let body: Value = login(&app, None, &[]).await.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert!(
        claims_of(body["access_token"].as_str().unwrap())
            .get("cnf")
            .is_none()
    );
}

#[tokio::test]
async fn bad_proofs_are_refused_with_invalid_dpop_proof_and_change_nothing() {
    let app = dpop_app(Backend::Embedded).await;
    let key = DpopKey::es256();
    let other = DpopKey::es256();
    let url = login_url();
    let replayed = key.proof("POST", &url, None);
    assert_eq!(
        login(&app, None, std::slice::from_ref(&replayed))
            .await
            .status(),
        200
    );

    let unsigned = {
        let header = json!({"typ": "dpop+jwt", "alg": "none", "jwk": key.jwk});
        let claims = json!({"jti": "n1", "htm": "POST", "htu": url, "iat": now_secs()});
        format!(
            "{}.{}.",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        )
    };
    let hmac = {
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some("dpop+jwt".into());
        let claims = json!({"jti": "h1", "htm": "POST", "htu": url, "iat": now_secs()});
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(b"shared")).unwrap()
    };
    let private_jwk = {
        // The header's key with its private scalar added.
        let proof = key.proof("POST", &url, None);
        let mut parts = proof.split('.');
        let mut header: Value =
            serde_json::from_slice(&B64.decode(parts.next().unwrap()).unwrap()).unwrap();
        header["jwk"]["d"] = json!(B64.encode([7u8; 32]));
        format!(
            "{}.{}.{}",
            B64.encode(header.to_string()),
            parts.next().unwrap(),
            parts.next().unwrap()
        )
    };
    let foreign_signature = {
        // Signed by `other`, naming `key`'s public key.
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("dpop+jwt".into());
        header.jwk = Some(key.jwk.clone());
        let claims = json!({"jti": "f1", "htm": "POST", "htu": url, "iat": now_secs()});
        jsonwebtoken::encode(&header, &claims, &other.key).unwrap()
    };
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("replayed jti", vec![replayed]),
        ("wrong method", vec![key.proof("GET", &url, None)]),
        (
            "wrong URL",
            vec![key.proof("POST", &format!("{ISSUER}/oauth/token"), None)],
        ),
        (
            "another host",
            vec![key.proof("POST", "http://evil.example/auth/login", None)],
        ),
        (
            "stale",
            vec![key.proof_with("POST", &url, None, |_, c| {
                c["iat"] = json!(now_secs() - 120)
            })],
        ),
        (
            "from the future",
            vec![key.proof_with("POST", &url, None, |_, c| {
                c["iat"] = json!(now_secs() + 120)
            })],
        ),
        ("alg none", vec![unsigned]),
        ("HS256", vec![hmac]),
        ("private jwk", vec![private_jwk]),
        ("signed by another key", vec![foreign_signature]),
        (
            "typ JWT",
            vec![key.proof_with("POST", &url, None, |h, _| h.typ = Some("JWT".into()))],
        ),
        (
            "no jti",
            vec![key.proof_with("POST", &url, None, |_, c| {
                c.as_object_mut().unwrap().remove("jti");
            })],
        ),
        (
            "two proofs",
            vec![key.proof("POST", &url, None), key.proof("POST", &url, None)],
        ),
        ("not a JWS", vec!["garbage".into()]),
    ];
    for (name, proofs) in cases {
        let (status, error) = error_of(login(&app, None, &proofs).await).await;
        assert_eq!(
            (status.as_u16(), error.as_str()),
            (400, "invalid_dpop_proof"),
            "{name}"
        );
    }
    // Only the first login made a session.
    let user = app.store.user_by_name("alice").await.unwrap().unwrap();
    let sessions = app
        .store
        .sessions_of(&user.id, app.clock.now_ms())
        .await
        .unwrap();
    assert_eq!(sessions.len(), 1);
    // Operators see it: one accepted, one replayed, the malformed rest invalid.
    let metrics = metrics_of(&app).await;
    assert!(
        metrics.contains("latchkey_dpop_proofs_total{outcome=\"accepted\"} 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("latchkey_dpop_proofs_total{outcome=\"replayed\"} 1\n"));
    assert!(metrics.contains("latchkey_dpop_proofs_total{outcome=\"invalid\"} 13\n"));
}

async fn metrics_of(app: &TestApp) -> String {
    app.get("/metrics").await.text().await.unwrap()
}

#[tokio::test]
async fn a_stolen_bound_refresh_token_is_useless_without_the_key() {
    let app = dpop_app(Backend::Redis).await;
    let key = DpopKey::es256();
    let thief = DpopKey::es256();
    let body: Value = login(&app, None, &[key.proof("POST", &login_url(), None)])
        .await
        .json()
        .await
        .unwrap();
    let stolen = body["refresh_token"].as_str().unwrap().to_owned();

    // No proof: told to send one. The thief's own key: the token is no good.
    assert_eq!(
        error_of(refresh(&app, &stolen, None).await).await,
        (StatusCode::BAD_REQUEST, "invalid_dpop_proof".into())
    );
    assert_eq!(
        error_of(
            refresh(
                &app,
                &stolen,
                Some(thief.proof("POST", &refresh_url(), None))
            )
            .await
        )
        .await,
        (StatusCode::UNAUTHORIZED, "invalid_grant".into())
    );
    // Nothing was consumed: the owner refreshes as if nothing happened.
    let response = refresh(&app, &stolen, Some(key.proof("POST", &refresh_url(), None))).await;
    assert_eq!(response.status(), 200);
    // A grace-window replay needs the key as well.
    assert_eq!(
        error_of(
            refresh(
                &app,
                &stolen,
                Some(thief.proof("POST", &refresh_url(), None))
            )
            .await
        )
        .await
        .1,
        "invalid_grant"
    );
    let replay = refresh(&app, &stolen, Some(key.proof("POST", &refresh_url(), None))).await;
    assert_eq!(replay.status(), 200);
    let metrics = metrics_of(&app).await;
    assert!(
        metrics
            .contains("latchkey_refresh_outcomes_total{outcome=\"wrong_dpop_key\",cause=\"\"} 3\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn clients_can_require_proofs_and_server_nonces() {
    let app = dpop_app(Backend::Embedded).await;
    let key = DpopKey::es256();
    assert_eq!(
        error_of(login(&app, Some("strict"), &[]).await).await,
        (StatusCode::BAD_REQUEST, "invalid_dpop_proof".into())
    );
    assert_eq!(
        login(
            &app,
            Some("strict"),
            &[key.proof("POST", &login_url(), None)]
        )
        .await
        .status(),
        200
    );

    // A nonce client: the first proof gets a nonce to use, the retry with it passes.
    let response = login(
        &app,
        Some("nonced"),
        &[key.proof("POST", &login_url(), None)],
    )
    .await;
    assert_eq!(response.status(), 400);
    let nonce = response.headers()["dpop-nonce"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(error_of(response).await.1, "use_dpop_nonce");
    let with = |nonce: &str| {
        let nonce = nonce.to_owned();
        key.proof_with("POST", &login_url(), None, move |_, c| {
            c["nonce"] = json!(nonce)
        })
    };
    let forged = error_of(
        login(
            &app,
            Some("nonced"),
            &[with("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")],
        )
        .await,
    )
    .await;
    assert_eq!(forged.1, "use_dpop_nonce");
    let response = login(&app, Some("nonced"), &[with(&nonce)]).await;
    assert_eq!(response.status(), 200);
    // Every answer to a nonce client carries the nonce to use next.
    assert!(response.headers().contains_key("dpop-nonce"));
}

#[tokio::test]
async fn the_token_endpoint_binds_client_tokens_and_introspection_shows_the_key() {
    let app = dpop_app(Backend::Embedded).await;
    let key = DpopKey::es256();
    let token_url = format!("{ISSUER}/oauth/token");
    let response = app
        .client
        .post(app.url("/oauth/token"))
        .basic_auth("worker", Some("worker-secret-0123456789abcdef"))
        .header("DPoP", key.proof("POST", &token_url, None))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "DPoP");
    let access = body["access_token"].as_str().unwrap();
    let introspection: Value = app
        .client
        .post(app.url("/oauth/introspect"))
        .basic_auth("worker", Some("worker-secret-0123456789abcdef"))
        .form(&[("token", access)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(introspection["active"], true);
    assert_eq!(introspection["token_type"], "DPoP");
    assert_eq!(introspection["cnf"]["jkt"], key.jkt());

    // A bound session's refresh token reports its key too; an unbound one none.
    for (proofs, bound) in [
        (vec![key.proof("POST", &login_url(), None)], true),
        (vec![], false),
    ] {
        let session: Value = login(&app, None, &proofs).await.json().await.unwrap();
        let introspection: Value = app
            .client
            .post(app.url("/oauth/introspect"))
            .basic_auth("worker", Some("worker-secret-0123456789abcdef"))
            .form(&[("token", session["refresh_token"].as_str().unwrap())])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(introspection["token_type"], "refresh_token");
        if bound {
            assert_eq!(introspection["cnf"]["jkt"], key.jkt());
        } else {
            assert!(introspection.get("cnf").is_none());
        }
    }

    // A bad proof at the token endpoint: RFC 9449 §5, 400 invalid_dpop_proof.
    let response = app
        .client
        .post(app.url("/oauth/token"))
        .basic_auth("worker", Some("worker-secret-0123456789abcdef"))
        .header("DPoP", key.proof("POST", &login_url(), None))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(response).await,
        (StatusCode::BAD_REQUEST, "invalid_dpop_proof".into())
    );

    // A confidential client's refresh tokens are not bound (§5): its access tokens are, per
    // request.
    let password_grant = app
        .client
        .post(app.url("/oauth/token"))
        .basic_auth("worker", Some("worker-secret-0123456789abcdef"))
        .header("DPoP", key.proof("POST", &token_url, None))
        .form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    let body: Value = password_grant.json().await.unwrap();
    assert_eq!(body["token_type"], "DPoP");
    let refreshed: Value = app
        .client
        .post(app.url("/oauth/token"))
        .basic_auth("worker", Some("worker-secret-0123456789abcdef"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", body["refresh_token"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(refreshed["token_type"], "Bearer");

    let metadata: Value = app
        .client
        .get(app.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        metadata["dpop_signing_alg_values_supported"],
        json!(["ES256", "RS256", "PS256", "EdDSA"])
    );
}

#[tokio::test]
async fn a_replayed_proof_is_refused_by_every_instance_on_the_store() {
    let first = dpop_app(Backend::Redis).await;
    // A second instance on the same Redis, with the same config and keys.
    let second = crate::helpers::start(
        first.config_text.clone(),
        tempfile::tempdir().unwrap(),
        None,
        latchkey::clock::Clock::system(),
    )
    .await;
    let key = DpopKey::es256();
    let proof = key.proof("POST", &login_url(), None);
    assert_eq!(
        login(&first, None, std::slice::from_ref(&proof))
            .await
            .status(),
        200
    );
    assert_eq!(
        error_of(login(&second, None, &[proof]).await).await,
        (StatusCode::BAD_REQUEST, "invalid_dpop_proof".into())
    );
}

use crate::verifier::resource_server as actix_example;

#[allow(dead_code)]
#[path = "../../crates/verify/examples/axum_resource_server.rs"]
pub(crate) mod axum_example;

/// Both example resource servers on real sockets, trusting `issuer`: their base URLs.
async fn resource_servers(issuer: &TestApp) -> Vec<(&'static str, String)> {
    let verifier = || {
        latchkey_verify::Verifier::from_jwks_url(
            &issuer.url("/.well-known/jwks.json"),
            ISSUER,
            "api",
        )
        .build()
        .unwrap()
    };
    let actix_verifier = verifier();
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(actix_web::web::Data::new(actix_verifier.clone()))
            .configure(actix_example::routes)
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let actix_url = format!("http://{}", server.addrs()[0]);
    tokio::spawn(server.run());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let axum_url = format!("http://{}", listener.local_addr().unwrap());
    let router = axum_example::router(verifier());
    tokio::spawn(async move { axum::serve(listener, router).await });
    vec![("actix", actix_url), ("axum", axum_url)]
}

async fn get_users(
    app: &TestApp,
    url: &str,
    authorization: Option<String>,
    proof: Option<String>,
) -> Response {
    let mut request = app.client.get(url);
    if let Some(authorization) = authorization {
        request = request.header("Authorization", authorization);
    }
    if let Some(proof) = proof {
        request = request.header("DPoP", proof);
    }
    request.send().await.unwrap()
}

fn challenges(response: &Response) -> Vec<String> {
    response
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn resource_servers_accept_a_bound_token_only_with_a_fresh_proof_of_its_key() {
    let issuer = dpop_app(Backend::Embedded).await;
    let key = DpopKey::es256();
    let thief = DpopKey::es256();
    let body: Value = login(&issuer, None, &[key.proof("POST", &login_url(), None)])
        .await
        .json()
        .await
        .unwrap();
    let bound = body["access_token"].as_str().unwrap().to_owned();
    let bearer: Value = login(&issuer, None, &[]).await.json().await.unwrap();
    let bearer = bearer["access_token"].as_str().unwrap().to_owned();

    for (name, base) in resource_servers(&issuer).await {
        let users = format!("{base}/users");
        let dpop = Some(format!("DPoP {bound}"));
        let proof = key.proof("GET", &users, Some(&bound));
        let ok = get_users(&issuer, &users, dpop.clone(), Some(proof.clone())).await;
        assert_eq!(ok.status(), 200, "{name}");

        // (why, Authorization, DPoP proof, the error expected), every one a 401 with a DPoP
        // challenge.
        let stale = key.proof_with("GET", &users, Some(&bound), |_, c| {
            c["iat"] = json!(now_secs() - 300)
        });
        let cases = [
            (
                "replayed proof",
                dpop.clone(),
                Some(proof),
                "invalid_dpop_proof",
            ),
            (
                "bound token as a bearer token",
                Some(format!("Bearer {bound}")),
                None,
                "invalid_token",
            ),
            ("no proof", dpop.clone(), None, "invalid_dpop_proof"),
            (
                "the thief's key",
                dpop.clone(),
                Some(thief.proof("GET", &users, Some(&bound))),
                "invalid_dpop_proof",
            ),
            (
                "no ath",
                dpop.clone(),
                Some(key.proof("GET", &users, None)),
                "invalid_dpop_proof",
            ),
            (
                "ath of another token",
                dpop.clone(),
                Some(key.proof("GET", &users, Some(&bearer))),
                "invalid_dpop_proof",
            ),
            (
                "wrong method",
                dpop.clone(),
                Some(key.proof("POST", &users, Some(&bound))),
                "invalid_dpop_proof",
            ),
            (
                "wrong URL",
                dpop.clone(),
                Some(key.proof("GET", &format!("{base}/users/1"), Some(&bound))),
                "invalid_dpop_proof",
            ),
            (
                "stale proof",
                dpop.clone(),
                Some(stale),
                "invalid_dpop_proof",
            ),
            (
                "an unbound token with the DPoP scheme",
                Some(format!("DPoP {bearer}")),
                Some(key.proof("GET", &users, Some(&bearer))),
                "invalid_token",
            ),
        ];
        for (why, authorization, proof, code) in cases {
            let response = get_users(&issuer, &users, authorization, proof).await;
            assert_eq!(response.status(), 401, "{name}: {why}");
            let challenge = challenges(&response).join(" | ");
            assert!(
                challenge.starts_with(&format!("DPoP error=\"{code}\"")),
                "{name}: {why}: {challenge}"
            );
            assert!(
                challenge.contains("algs=\"ES256 RS256 PS256 EdDSA\""),
                "{name}: {why}"
            );
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"], code, "{name}: {why}");
        }

        // Unbound bearer tokens work as before; without credentials both schemes are offered.
        let plain = get_users(&issuer, &users, Some(format!("Bearer {bearer}")), None).await;
        assert_eq!(plain.status(), 200, "{name}");
        let missing = get_users(&issuer, &users, None, None).await;
        assert_eq!(missing.status(), 401, "{name}");
        assert_eq!(
            challenges(&missing),
            vec![
                "Bearer".to_owned(),
                "DPoP algs=\"ES256 RS256 PS256 EdDSA\"".to_owned()
            ],
            "{name}"
        );

        // A missing scope is answered in the scheme the token came with.
        let delete = format!("{base}/users/1");
        let forbidden = issuer
            .client
            .delete(&delete)
            .header("Authorization", format!("DPoP {bound}"))
            .header("DPoP", key.proof("DELETE", &delete, Some(&bound)))
            .send()
            .await
            .unwrap();
        assert_eq!(forbidden.status(), 403, "{name}");
        assert_eq!(
            challenges(&forbidden),
            vec!["DPoP error=\"insufficient_scope\", scope=\"users:admin\"".to_owned()],
            "{name}"
        );
    }
}

#[tokio::test]
async fn the_axum_middleware_guards_a_whole_router_and_hands_on_the_claims() {
    let issuer = dpop_app(Backend::Embedded).await;
    let key = DpopKey::es256();
    let body: Value = login(&issuer, None, &[key.proof("POST", &login_url(), None)])
        .await
        .json()
        .await
        .unwrap();
    let bound = body["access_token"].as_str().unwrap();
    let servers = resource_servers(&issuer).await;
    let whoami = format!("{}/admin/whoami", servers[1].1);
    let response = issuer
        .client
        .get(&whoami)
        .header("Authorization", format!("DPoP {bound}"))
        .header("DPoP", key.proof("GET", &whoami, Some(bound)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["bound_to"], key.jkt());
    let stolen = issuer
        .client
        .get(&whoami)
        .header("Authorization", format!("Bearer {bound}"))
        .send()
        .await
        .unwrap();
    assert_eq!(stolen.status(), 401);
}

#[tokio::test]
async fn the_issuers_own_endpoints_want_the_proof_of_a_bound_token() {
    let app = dpop_app(Backend::Embedded).await;
    let key = DpopKey::es256();
    let thief = DpopKey::es256();
    let body: Value = login(&app, None, &[key.proof("POST", &login_url(), None)])
        .await
        .json()
        .await
        .unwrap();
    let bound = body["access_token"].as_str().unwrap().to_owned();
    let userinfo = format!("{ISSUER}/auth/userinfo");
    let call = |authorization: String, proof: Option<String>| {
        let mut request = app
            .client
            .get(app.url("/auth/userinfo"))
            .header("Authorization", authorization);
        if let Some(proof) = proof {
            request = request.header("DPoP", proof);
        }
        request.send()
    };
    let proof = key.proof("GET", &userinfo, Some(&bound));
    let ok = call(format!("DPoP {bound}"), Some(proof.clone()))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    for (why, response, code) in [
        (
            "replay",
            call(format!("DPoP {bound}"), Some(proof)).await.unwrap(),
            "invalid_dpop_proof",
        ),
        (
            "as bearer",
            call(format!("Bearer {bound}"), None).await.unwrap(),
            "invalid_token",
        ),
        (
            "thief",
            call(
                format!("DPoP {bound}"),
                Some(thief.proof("GET", &userinfo, Some(&bound))),
            )
            .await
            .unwrap(),
            "invalid_dpop_proof",
        ),
        (
            "no proof",
            call(format!("DPoP {bound}"), None).await.unwrap(),
            "invalid_dpop_proof",
        ),
    ] {
        assert_eq!(response.status(), 401, "{why}");
        let challenge = challenges(&response).join(" | ");
        assert!(
            challenge.starts_with(&format!("DPoP error=\"{code}\"")),
            "{why}: {challenge}"
        );
        assert_eq!(error_of(response).await.1, code, "{why}");
    }
}

on_every_backend!(
    throttled_requests_plant_no_proofs_and_a_flood_harms_only_its_own_address,
    one_address_cannot_take_the_replay_memory_from_everyone,
);

/// An issuer behind a trusted proxy (the test itself), so each request can come from an address
/// of its choosing, with a replay memory of `capacity` proofs on the embedded store.
async fn flood_app(backend: Backend, capacity: usize, logins_per_ip: u32) -> TestApp {
    let app = spawn_app_with(backend, |c| {
        c.text = c
            .text
            .replace("[tokens]", "trusted_proxies = [\"127.0.0.1\"]\n\n[tokens]");
        c.set(
            "limits",
            &format!("login_attempts_per_ip = {logins_per_ip}"),
        );
        c.text
            .push_str(&format!("\n[dpop]\nmax_remembered_proofs = {capacity}\n"));
    })
    .await;
    app.add_user("alice", PASSWORD).await;
    app
}

async fn dpop_login_from(app: &TestApp, ip: &str, key: &DpopKey) -> Response {
    app.client
        .post(app.url("/auth/login"))
        .header("x-forwarded-for", ip)
        .header("DPoP", key.proof("POST", &login_url(), None))
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
}

async fn throttled_requests_plant_no_proofs_and_a_flood_harms_only_its_own_address(
    backend: Backend,
) {
    let app = flood_app(backend, 20, 5).await;
    let key = DpopKey::es256();
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..60 {
        let status = dpop_login_from(&app, "198.51.100.66", &key).await.status();
        *statuses.entry(status.as_u16()).or_insert(0) += 1;
    }
    // Five served, the rest refused by the login throttle before their proofs were remembered.
    assert_eq!(statuses.get(&200), Some(&5), "{statuses:?}");
    assert_eq!(statuses.get(&429), Some(&55), "{statuses:?}");
    // So the memory (20 proofs) has room for everyone else.
    let other = dpop_login_from(&app, "203.0.113.10", &DpopKey::es256()).await;
    assert_eq!(other.status(), StatusCode::OK);
}

async fn one_address_cannot_take_the_replay_memory_from_everyone(backend: Backend) {
    let app = flood_app(backend, 40, 1000).await;
    let key = DpopKey::es256();
    let mut refused = 0;
    for _ in 0..30 {
        let response = dpop_login_from(&app, "198.51.100.66", &key).await;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(response.headers().contains_key("retry-after"));
                refused += 1;
            }
            other => panic!("{other}"),
        }
    }
    match backend {
        // A quarter of the memory is the address's share: the rest of its requests wait.
        Backend::Embedded => assert_eq!(refused, 20),
        // Redis remembers every proof for its window itself, bounded by its own memory.
        _ => assert_eq!(refused, 0),
    }
    for i in 0..5 {
        let other = dpop_login_from(&app, &format!("203.0.113.{i}"), &DpopKey::es256()).await;
        assert_eq!(other.status(), StatusCode::OK, "address {i}");
    }
}

#[tokio::test]
async fn a_nonce_clients_refresh_needs_a_nonce_whether_or_not_it_names_itself() {
    let app = dpop_app(Backend::Embedded).await;
    let key = DpopKey::es256();
    let first = login(
        &app,
        Some("nonced"),
        &[key.proof("POST", &login_url(), None)],
    )
    .await;
    let nonce = first.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    let with_nonce = |url: &str| {
        let nonce = nonce.clone();
        key.proof_with("POST", url, None, move |_, c| c["nonce"] = json!(nonce))
    };
    let tokens: Value = login(&app, Some("nonced"), &[with_nonce(&login_url())])
        .await
        .json()
        .await
        .unwrap();
    let token = tokens["refresh_token"].as_str().unwrap().to_owned();
    let refresh_naming = async |client: Option<&str>, proof: String| {
        let mut body = json!({"refresh_token": token});
        if let Some(client) = client {
            body["client_id"] = json!(client);
        }
        app.client
            .post(app.url("/auth/refresh"))
            .header("DPoP", proof)
            .json(&body)
            .send()
            .await
            .unwrap()
    };
    for named in [Some("nonced"), None] {
        let without = refresh_naming(named, key.proof("POST", &refresh_url(), None)).await;
        assert!(without.headers().contains_key("dpop-nonce"));
        assert_eq!(
            error_of(without).await,
            (StatusCode::BAD_REQUEST, "use_dpop_nonce".into()),
            "{named:?}"
        );
    }
    // Naming another client is refused and consumes nothing.
    let other = refresh_naming(Some("strict"), key.proof("POST", &refresh_url(), None)).await;
    assert_eq!(other.status(), StatusCode::UNAUTHORIZED);
    let ok = refresh_naming(Some("nonced"), with_nonce(&refresh_url())).await;
    assert_eq!(ok.status(), StatusCode::OK);
}
