//! One integration binary: the real server on a random port, a real HTTP client, and for the
//! Redis backend a `redis-server` each test starts for itself.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// Runs each listed `async fn(Backend)` once per store backend.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod embedded_store {
            $(#[tokio::test]
            async fn $name() {
                super::$name(crate::helpers::Backend::Embedded).await
            })*
        }
        mod redis_store {
            $(#[tokio::test]
            async fn $name() {
                super::$name(crate::helpers::Backend::Redis).await
            })*
        }
    };
}

mod helpers;

mod architecture;
mod authorize;
mod back_channel_logout;
mod browser;
mod browser_e2e;
mod browser_sso;
mod deploy;
mod discovery;
mod dpop;
mod eddsa;
mod embedded;
mod feed;
mod flow;
mod fuzz;
mod hsm;
mod key_rotation;
mod keys;
mod malformed;
mod metrics;
mod oauth;
mod oidc;
mod openapi;
mod operations;
mod proxies;
mod races;
mod redis_connect;
mod redis_store;
mod refresh;
mod scale_out;
mod sentinel;
mod sessions;
mod shutdown;
mod store_conformance;
mod userinfo;
mod users;
mod verifier;
