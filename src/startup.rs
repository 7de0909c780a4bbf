//! Building and running the server: shared state built once, the route table in one place.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::{DefaultHeaders, Next, from_fn};
use actix_web::{App, HttpServer, web};

use crate::clock::Clock;
use crate::config::Config;
use crate::credentials::{CredentialError, PasswordHasher};
use crate::flows::Flows;
use crate::keys::{KeyError, KeyRing};
use crate::reload;
use crate::routes::json::MAX_JSON_BODY;
use crate::routes::{account, auth, demo, method_not_allowed, not_found, oauth, ops, well_known};
use crate::state::{LiveState, RUNNING_VALUES_META, RestartOnlyValues};
use crate::store::{self, SharedStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("signing keys: {0}")]
    Keys(#[from] KeyError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("passwords: {0}")]
    Credentials(#[from] CredentialError),
    #[error("{0}")]
    Flows(#[from] crate::flows::FlowError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

pub struct Application {
    port: u16,
    server: Server,
    flows: web::Data<Flows>,
    /// The config file to reload from, and how often to look for changes.
    watch: Option<(PathBuf, Duration)>,
}

impl Application {
    /// Loads keys, opens the store, binds the listener (port 0 picks a free one).
    pub async fn build(config: Config, clock: Clock) -> Result<Application, StartupError> {
        let ring = KeyRing::load(&config)?;
        let store = store::open_with(&config.store.url, config.store.durability).await?;
        Self::build_with_store(config, clock, ring, store)
    }

    pub fn build_with_store(
        config: Config,
        clock: Clock,
        ring: KeyRing,
        store: SharedStore,
    ) -> Result<Application, StartupError> {
        let listener = TcpListener::bind(config.listen).map_err(|source| StartupError::Bind {
            addr: config.listen.to_string(),
            source,
        })?;
        let port = listener
            .local_addr()
            .map_err(|source| StartupError::Bind {
                addr: config.listen.to_string(),
                source,
            })?
            .port();
        let hasher = PasswordHasher::new(&config.passwords)?;
        let state = Arc::new(LiveState::new(config, ring));
        let flows = web::Data::new(Flows::new(state, store, hasher, clock)?);
        let shared = flows.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(shared.clone())
                .app_data(web::PayloadConfig::new(MAX_JSON_BODY))
                .wrap(
                    // Handlers that cache (the JWKS) set their own Cache-Control; this one
                    // covers every token-handling and error response.
                    DefaultHeaders::new()
                        .add((header::CACHE_CONTROL, "no-store"))
                        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff")),
                )
                .wrap(from_fn(crate::routes::browser::cors))
                .wrap(from_fn(log_request))
                .configure(routes)
        })
        .listen(listener)
        .map_err(|source| StartupError::Bind {
            addr: format!("port {port}"),
            source,
        })?
        .shutdown_timeout(10)
        .run();
        Ok(Application {
            port,
            server,
            flows,
            watch: None,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server from elsewhere (tests, signal handlers).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// The flows (and through them the live state) the server runs with.
    pub fn flows(&self) -> web::Data<Flows> {
        self.flows.clone()
    }

    /// Reloads from `path` on SIGHUP and whenever a poll every `poll` finds it (or a key file
    /// it names) changed.
    pub fn watch_config(mut self, path: PathBuf, poll: Duration) -> Self {
        self.watch = Some((path, poll));
        self
    }

    /// Serves until the server is stopped (SIGINT/SIGTERM: graceful, in-flight requests finish).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let flows = self.flows.clone();
        let mut tasks = vec![tokio::spawn(sweep_forever(flows.clone()))];
        tasks.push(tokio::spawn(publish_when_the_store_answers(flows.clone())));
        tasks.push(tokio::spawn(follow_password_costs_forever(flows)));
        if let Some((path, poll)) = self.watch {
            let flows = &self.flows;
            tasks.push(tokio::spawn(reload::watch(
                Arc::clone(flows.state()),
                flows.store().clone(),
                flows.clock().clone(),
                path,
                poll,
            )));
        }
        let result = self.server.await;
        for task in tasks {
            task.abort();
        }
        result
    }
}

/// The route table: every endpoint of the issuer, in one place.
fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(post("/auth/login", auth::login))
        .service(post("/auth/refresh", auth::refresh))
        .service(post("/auth/logout", auth::logout))
        .service(get("/auth/userinfo", auth::userinfo))
        .service(get("/auth/sessions", account::list))
        .service(delete("/auth/sessions/{sid}", account::end))
        .service(post("/auth/logout-all", account::logout_all))
        .service(post("/auth/password", account::change_password))
        .service(post("/auth/register", account::register))
        .service(post("/oauth/token", oauth::token))
        .service(post("/oauth/revoke", oauth::revoke))
        .service(post("/oauth/introspect", oauth::introspect))
        .service(get("/.well-known/jwks.json", well_known::jwks))
        .service(get(
            "/.well-known/oauth-authorization-server",
            well_known::metadata,
        ))
        .service(get(
            "/.well-known/openid-configuration",
            well_known::metadata,
        ))
        .service(get("/sdk/latchkey.js", demo::client_module))
        .service(get("/demo/", demo::page))
        .service(get("/demo/app.js", demo::script))
        .service(get("/demo/demo.css", demo::style))
        .service(get("/demo/config.json", demo::settings))
        .service(get("/healthz", ops::healthz))
        .service(get("/readyz", ops::readyz))
        .default_service(web::to(not_found));
}

/// A path that answers POST; any other method gets 405 with `Allow` (RFC 9110 §15.5.6).
fn post<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path.to_owned())
        .route(web::post().to(handler))
        .default_service(web::to(|| method_not_allowed("POST")))
}

/// A path that answers DELETE.
fn delete<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path.to_owned())
        .route(web::delete().to(handler))
        .default_service(web::to(|| method_not_allowed("DELETE")))
}

/// A path that answers GET, and HEAD like GET without the body (RFC 9110 §9.3.2).
fn get<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path.to_owned())
        .route(web::get().to(handler.clone()))
        .route(web::head().to(handler))
        .default_service(web::to(|| method_not_allowed("GET, HEAD")))
}

/// One line per request: method, path (never the query), status, time. No headers, no bodies.
async fn log_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let path = req.path().chars().take(200).collect::<String>();
    let response = next.call(req).await?;
    tracing::info!(
        %method,
        path,
        status = response.status().as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
    Ok(response)
}

/// Keeps the unknown-user dummies at the costs the stored hashes have: at start (retried while
/// the store is down), then hourly.
async fn follow_password_costs_forever(flows: web::Data<Flows>) {
    let mut wait = Duration::ZERO;
    loop {
        tokio::time::sleep(wait).await;
        match flows.follow_password_costs().await {
            Ok(()) => wait = Duration::from_secs(3600),
            Err(e) => {
                tracing::debug!(error = %crate::telemetry::error_chain(&e), "cannot read the password costs yet");
                wait = Duration::from_secs(5);
            }
        }
    }
}

/// Records the key publications (and the running settings) at start, retrying with back-off
/// while the store is down: every instance must leave its publications on record, or a later
/// schedule check would judge against a history that misses them.
async fn publish_when_the_store_answers(flows: web::Data<Flows>) {
    let mut delay = Duration::from_secs(1);
    let mut reported = false;
    loop {
        let (state, store, clock) = (flows.state(), flows.store(), flows.clock());
        let published = reload::publish_and_check(state, store.as_ref(), clock).await;
        if published.complete || !reported {
            for warning in &published.warnings {
                tracing::warn!("{warning}");
            }
        }
        if published.complete {
            record_running_values(&flows).await;
            if reported {
                tracing::info!("key publications recorded now that the store answers");
            }
            return;
        }
        if !reported {
            tracing::warn!(
                "the store is unreachable; recording the key publications once it answers"
            );
            reported = true;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// Records the restart-only values this server runs with, so that `config check` can tell an
/// operator which edits of the file wait for a restart.
async fn record_running_values(flows: &Flows) {
    let values = RestartOnlyValues::of(&flows.snapshot().config);
    let Ok(json) = serde_json::to_string(&values) else {
        return;
    };
    if let Err(e) = flows.store().put_meta(RUNNING_VALUES_META, &json).await {
        tracing::warn!(error = %crate::telemetry::error_chain(&e), "cannot record the running settings");
    }
}

/// Removes expired sessions and grace-window seals from backends without native expiry. The
/// period follows the grace window in force (read on every tick, so a reload applies).
async fn sweep_forever(flows: web::Data<Flows>) {
    loop {
        let period = flows
            .snapshot()
            .config
            .tokens
            .reuse_grace
            .clamp(Duration::from_secs(1), Duration::from_secs(30));
        tokio::time::sleep(period).await;
        if let Err(e) = flows.store().sweep(flows.clock().now_ms()).await {
            tracing::warn!(error = %crate::telemetry::error_chain(&e), "sweep failed; will retry");
        }
    }
}
