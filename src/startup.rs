//! Building and running the server: shared state built once, the route table in one place.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
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
use crate::routes::{
    account, auth, authorize, demo, end_session, method_not_allowed, not_found, oauth, openapi,
    ops, ssf, well_known,
};
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
    #[error(
        "another `latchkey serve` already serves the embedded store {path}: one process serves \
         an embedded store (its throttles and DPoP replay memory live in that process); stop \
         it, or run several instances on Redis"
    )]
    StoreInUse { path: String },
    #[error("cannot lock the embedded store {path}: {source}")]
    StoreLock {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

pub struct Application {
    port: u16,
    server: Server,
    /// `/metrics` on its own listener (`[metrics] listen`), and its port.
    metrics_server: Option<(Server, u16)>,
    flows: web::Data<Flows>,
    /// The config file to reload from, and how often to look for changes.
    watch: Option<(PathBuf, Duration)>,
    /// Stop gracefully on SIGTERM/SIGINT (`serve`; tests stop through the handle).
    shutdown: Option<crate::config::ShutdownSettings>,
    /// Held while serving an embedded store (see [`store::embedded::lock_for_serving`]).
    _serving_lock: Option<std::fs::File>,
}

impl Application {
    /// Loads keys, opens the store, binds the listener (port 0 picks a free one).
    pub async fn build(config: Config, clock: Clock) -> Result<Application, StartupError> {
        let ring = KeyRing::load(&config)?;
        let store = store::open_configured(&config.store).await?;
        let lock = match config.store.url.strip_prefix("sqlite://") {
            Some(path) => Some(serving_lock(Path::new(path)).await?),
            None => None,
        };
        let mut app = Self::build_with_store(config, clock, ring, store)?;
        app._serving_lock = lock;
        Ok(app)
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
        let metrics_listener = config
            .metrics_listen
            .map(|addr| {
                let listener = TcpListener::bind(addr).map_err(|source| StartupError::Bind {
                    addr: addr.to_string(),
                    source,
                })?;
                let port = listener.local_addr().map_or(0, |a| a.port());
                Ok::<_, StartupError>((listener, port))
            })
            .transpose()?;
        let metrics_on_main = config.metrics_on_main_listener;
        let drain_timeout = config.shutdown.drain_timeout.as_secs().max(1);
        let state = Arc::new(LiveState::new(config, ring));
        let flows = web::Data::new(Flows::new(state, store, hasher, clock)?);
        let shared = flows.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(shared.clone())
                .app_data(web::PayloadConfig::new(MAX_JSON_BODY))
                .wrap(security_headers())
                .wrap(from_fn(crate::routes::browser::cors))
                .wrap(from_fn(observe_request))
                .configure(|cfg| routes(cfg, metrics_on_main))
        })
        .listen(listener)
        .map_err(|source| StartupError::Bind {
            addr: format!("port {port}"),
            source,
        })?
        // Signals are handled in `run_until_stopped`, which first turns `/readyz` to 503.
        .disable_signals()
        .shutdown_timeout(drain_timeout)
        .run();
        let metrics_server = match metrics_listener {
            Some((listener, metrics_port)) => {
                let shared = flows.clone();
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(shared.clone())
                        .wrap(security_headers())
                        .service(get(METRICS, ops::metrics))
                        .default_service(web::to(not_found))
                })
                .workers(1)
                .disable_signals()
                .listen(listener)
                .map_err(|source| StartupError::Bind {
                    addr: format!("port {metrics_port}"),
                    source,
                })?
                .shutdown_timeout(1)
                .run();
                Some((server, metrics_port))
            }
            None => None,
        };
        Ok(Application {
            port,
            server,
            metrics_server,
            flows,
            watch: None,
            shutdown: None,
            _serving_lock: None,
        })
    }

    /// The port `/metrics` is served on alone, when `[metrics] listen` is set.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_server.as_ref().map(|(_, port)| *port)
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

    /// Stops gracefully on SIGTERM and SIGINT: `/readyz` answers 503 at once, the server keeps
    /// serving for `settings.delay` (load balancers notice), then the listener closes and
    /// in-flight requests get up to `settings.drain_timeout` to finish.
    pub fn stop_on_signals(mut self, settings: crate::config::ShutdownSettings) -> Self {
        self.shutdown = Some(settings);
        self
    }

    /// Serves until the server is stopped (through its handle, or a signal with
    /// [`Application::stop_on_signals`]).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let flows = self.flows.clone();
        let outbound = {
            let flows = flows.clone();
            tokio::spawn(async move { flows.outbox().deliver_forever().await })
        };
        let mut tasks = vec![tokio::spawn(sweep_forever(flows.clone()))];
        if let Some(settings) = self.shutdown {
            tasks.push(tokio::spawn(stop_on_signal(
                flows.clone(),
                self.server.handle(),
                settings,
            )));
        }
        tasks.push(tokio::spawn(publish_when_the_store_answers(flows.clone())));
        // The revocation feed: the log watch that wakes held polls, and push delivery.
        let watcher = flows.clone();
        tasks.push(tokio::spawn(async move {
            let watch = std::sync::Arc::clone(watcher.log_watch());
            watch
                .follow(watcher.store().clone(), watcher.clock().clone())
                .await;
        }));
        let pusher = flows.clone();
        tasks.push(tokio::spawn(async move { pusher.push_forever().await }));
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
        let metrics = self.metrics_server.map(|(server, _)| {
            let handle = server.handle();
            tasks.push(tokio::spawn(async move {
                let _ = server.await;
            }));
            handle
        });
        let result = self.server.await;
        if let Some(metrics) = metrics {
            metrics.stop(false).await;
        }
        for task in tasks {
            task.abort();
        }
        // Logout tokens already queued still go out, within a bound.
        self.flows.outbox().finish();
        if tokio::time::timeout(OUTBOX_DRAIN, outbound).await.is_err() {
            tracing::warn!("stopped with back-channel logouts still undelivered");
        }
        result
    }
}

/// How long a stopping server keeps delivering queued back-channel logouts.
const OUTBOX_DRAIN: Duration = Duration::from_secs(5);

const METRICS: &str = "/metrics";

/// Every path the route table serves, for the request metrics' `route` label (a bounded set)
/// and for the test that the OpenAPI document lists them all.
pub const ROUTE_PATTERNS: &[&str] = &[
    "/auth/login",
    "/auth/refresh",
    "/auth/logout",
    "/auth/userinfo",
    "/auth/sessions",
    "/auth/sessions/{sid}",
    "/auth/logout-all",
    "/auth/password",
    "/auth/profile",
    "/auth/register",
    "/auth/grants",
    "/auth/grants/{client_id}",
    "/oauth/authorize",
    "/oauth/authorize/login",
    "/oauth/authorize/consent",
    "/oauth/logout",
    "/oauth/logout/confirm",
    "/oauth/pages.css",
    "/oauth/token",
    "/oauth/revoke",
    "/oauth/introspect",
    "/.well-known/jwks.json",
    "/.well-known/oauth-authorization-server",
    "/.well-known/openid-configuration",
    "/.well-known/ssf-configuration",
    "/ssf/stream",
    "/ssf/status",
    "/ssf/verify",
    "/ssf/poll/{stream_id}",
    "/openapi.json",
    "/sdk/latchkey.js",
    "/demo/",
    "/demo/app.js",
    "/demo/demo.css",
    "/demo/config.json",
    "/healthz",
    "/readyz",
    METRICS,
];

/// The route table: every endpoint of the issuer, in one place. `/metrics` is here unless it
/// has a listener of its own.
fn routes(cfg: &mut web::ServiceConfig, with_metrics: bool) {
    if with_metrics {
        cfg.service(get(METRICS, ops::metrics));
    }
    cfg.service(post("/auth/login", auth::login))
        .service(post("/auth/refresh", auth::refresh))
        .service(post("/auth/logout", auth::logout))
        .service(
            web::resource("/auth/userinfo")
                .route(web::get().to(auth::userinfo))
                .route(web::head().to(auth::userinfo))
                .route(web::post().to(auth::userinfo_post))
                .default_service(web::to(|| method_not_allowed("GET, HEAD, POST"))),
        )
        .service(get("/auth/sessions", account::list))
        .service(delete("/auth/sessions/{sid}", account::end))
        .service(post("/auth/logout-all", account::logout_all))
        .service(post("/auth/password", account::change_password))
        .service(
            web::resource("/auth/profile")
                .route(web::get().to(account::profile))
                .route(web::head().to(account::profile))
                .route(web::patch().to(account::update_profile))
                .default_service(web::to(|| method_not_allowed("GET, HEAD, PATCH"))),
        )
        .service(post("/auth/register", account::register))
        .service(
            web::resource("/oauth/authorize")
                .route(web::get().to(authorize::authorize_get))
                .route(web::head().to(authorize::authorize_get))
                .route(web::post().to(authorize::authorize_post))
                .default_service(web::to(|| method_not_allowed("GET, HEAD, POST"))),
        )
        .service(post("/oauth/authorize/login", authorize::login_form))
        .service(post("/oauth/authorize/consent", authorize::consent_form))
        .service(
            web::resource("/oauth/logout")
                .route(web::get().to(end_session::end_session_get))
                .route(web::head().to(end_session::end_session_get))
                .route(web::post().to(end_session::end_session_post))
                .default_service(web::to(|| method_not_allowed("GET, HEAD, POST"))),
        )
        .service(post(
            "/oauth/logout/confirm",
            end_session::end_session_confirm,
        ))
        .service(get("/oauth/pages.css", authorize::stylesheet))
        .service(get("/auth/grants", account::grants))
        .service(delete("/auth/grants/{client_id}", account::withdraw_grant))
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
            well_known::openid_configuration,
        ))
        .service(get("/.well-known/ssf-configuration", ssf::configuration))
        .service(
            web::resource("/ssf/stream")
                .route(web::post().to(ssf::create))
                .route(web::get().to(ssf::read))
                .route(web::patch().to(ssf::update))
                .route(web::put().to(ssf::replace))
                .route(web::delete().to(ssf::delete))
                .default_service(web::to(|| {
                    method_not_allowed("GET, POST, PATCH, PUT, DELETE")
                })),
        )
        .service(
            web::resource("/ssf/status")
                .route(web::get().to(ssf::status))
                .route(web::post().to(ssf::set_status))
                .default_service(web::to(|| method_not_allowed("GET, POST"))),
        )
        .service(post("/ssf/verify", ssf::verify))
        .service(post("/ssf/poll/{stream_id}", ssf::poll))
        .service(get("/openapi.json", openapi::document))
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

/// On every response: no caching unless a handler says otherwise (the JWKS does), no MIME
/// sniffing, no referrer, never framed.
fn security_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add((header::CACHE_CONTROL, "no-store"))
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::REFERRER_POLICY, "no-referrer"))
        .add((header::X_FRAME_OPTIONS, "DENY"))
        .add((header::CONTENT_SECURITY_POLICY, "frame-ancestors 'none'"))
}

const REQUEST_ID: &str = "x-request-id";
const MAX_REQUEST_ID_CHARS: usize = 64;

/// The caller's `X-Request-Id` when it is a plain token (1-64 of `A-Z a-z 0-9 . _ : -`), else a
/// new one: an id echoed into logs and headers must not carry anything else.
fn request_id(req: &ServiceRequest) -> String {
    req.headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| {
            (1..=MAX_REQUEST_ID_CHARS).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-_:".contains(&b))
        })
        .map_or_else(new_request_id, str::to_owned)
}

/// A new request id, 32 hex digits: a random prefix drawn once per process (ids from different
/// instances do not collide) and a counter. Request ids are not secrets, so no request pays for
/// randomness.
fn new_request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static PREFIX: std::sync::LazyLock<u64> =
        std::sync::LazyLock::new(|| crate::tokens::random_uuid().as_u64_pair().0);
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{:016x}{:016x}",
        *PREFIX,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Per request: a request id (echoed in `X-Request-Id`), the request metrics, and one log line
/// with the route, status, time and client. Never a header value, a query or a body.
async fn observe_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = std::time::Instant::now();
    let id = request_id(&req);
    let method = req.method().clone();
    let flows = req.app_data::<web::Data<Flows>>().cloned();
    let mut response = next.call(req).await?;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    let pattern = response.request().match_pattern();
    let route = pattern
        .as_deref()
        .and_then(|p| ROUTE_PATTERNS.iter().find(|known| **known == p))
        .copied()
        .unwrap_or("unmatched");
    if let Some(flows) = flows {
        flows
            .metrics()
            .request(route, status, elapsed.as_secs_f64());
    }
    let client_id = response
        .response()
        .extensions()
        .get::<crate::routes::ClientOf>()
        .map(|c| c.0.clone());
    tracing::info!(
        request_id = %id,
        %method,
        route,
        status,
        ms = elapsed.as_micros() as f64 / 1000.0,
        client_id,
        "request"
    );
    if let Ok(value) = header::HeaderValue::from_str(&id) {
        response
            .headers_mut()
            .insert(header::HeaderName::from_static(REQUEST_ID), value);
    }
    Ok(response)
}

/// Waits for SIGTERM or SIGINT, then drains: not ready, still serving for the delay, then a
/// graceful stop (the listener closes; in-flight requests finish within the drain timeout).
async fn stop_on_signal(
    flows: web::Data<Flows>,
    server: ServerHandle,
    settings: crate::config::ShutdownSettings,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for SIGTERM/SIGINT; stop the process with SIGKILL");
        return;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    flows.start_draining();
    tracing::info!(
        signal = name,
        delay_ms = settings.delay.as_millis() as u64,
        drain_timeout_s = settings.drain_timeout.as_secs(),
        "shutting down: not ready now, closing the listener after the delay"
    );
    tokio::time::sleep(settings.delay).await;
    server.stop(true).await;
}

/// The embedded store's serving lock, waiting up to two seconds for a process (or an
/// application of this one) that is just stopping to let go of it.
async fn serving_lock(database: &Path) -> Result<std::fs::File, StartupError> {
    let path = database.display().to_string();
    for _ in 0..40 {
        match store::embedded::lock_for_serving(database) {
            Ok(Some(file)) => return Ok(file),
            Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(source) => return Err(StartupError::StoreLock { path, source }),
        }
    }
    Err(StartupError::StoreInUse { path })
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
                tracing::warn!(event = "keys.schedule_warning", "{warning}");
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
