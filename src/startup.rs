//! Building and running the server: shared state built once, the route table in one place.

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::{DefaultHeaders, Next, from_fn};
use actix_web::{App, HttpServer, web};

use crate::clock::Clock;
use crate::config::Config;
use crate::credentials::{CredentialError, PasswordHasher};
use crate::error::json_error;
use crate::issuer::Issuer;
use crate::keys::{KeyError, KeyRing};
use crate::limits::LoginLimiter;
use crate::reload::{self, LiveHandle};
use crate::routes::{auth, method_not_allowed, not_found, ops, well_known};
use crate::store::{self, SharedStore, StoreError};

/// Request bodies on this API are small; anything larger is refused before parsing.
const MAX_JSON_BODY: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("signing keys: {0}")]
    Keys(#[from] KeyError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("passwords: {0}")]
    Credentials(#[from] CredentialError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

pub struct Application {
    port: u16,
    server: Server,
    issuer: web::Data<Issuer>,
    /// The config file to reload from, and how often to look for changes.
    watch: Option<(PathBuf, Duration)>,
}

impl Application {
    /// Loads keys, opens the store, binds the listener (port 0 picks a free one).
    pub async fn build(config: Config, clock: Clock) -> Result<Application, StartupError> {
        let ring = KeyRing::load(&config)?;
        let store = store::open(&config.store.url).await?;
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
        let issuer = web::Data::new(Issuer {
            hasher: PasswordHasher::new(&config.passwords)?,
            limiter: LoginLimiter::new(config.limits.clone()),
            live: LiveHandle::new(config, ring),
            store,
            clock,
        });
        let state = issuer.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(
                    web::JsonConfig::default()
                        .limit(MAX_JSON_BODY)
                        .error_handler(|err, _| json_error(err).into()),
                )
                .wrap(
                    // Handlers that cache (the JWKS) set their own Cache-Control; this one
                    // covers every token-handling and error response.
                    DefaultHeaders::new()
                        .add((header::CACHE_CONTROL, "no-store"))
                        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff")),
                )
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
            issuer,
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

    /// The issuer state the server runs with.
    pub fn issuer(&self) -> web::Data<Issuer> {
        self.issuer.clone()
    }

    /// Reloads from `path` on SIGHUP and whenever a poll every `poll` finds it (or a key file
    /// it names) changed.
    pub fn watch_config(mut self, path: PathBuf, poll: Duration) -> Self {
        self.watch = Some((path, poll));
        self
    }

    /// Serves until the server is stopped (SIGINT/SIGTERM: graceful, in-flight requests finish).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let mut tasks = vec![tokio::spawn(sweep_forever(self.issuer.clone()))];
        let issuer = self.issuer.clone();
        tasks.push(tokio::spawn(async move {
            for warning in reload::publish_and_check(&issuer).await {
                tracing::warn!("{warning}");
            }
        }));
        if let Some((path, poll)) = self.watch {
            tasks.push(tokio::spawn(reload::watch(self.issuer.clone(), path, poll)));
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
    // Each path answers its one method; any other gets 405, an unknown path 404.
    let resource = |path: &str, handler| {
        web::resource(path.to_owned())
            .route(handler)
            .default_service(web::to(method_not_allowed))
    };
    cfg.service(resource("/auth/login", web::post().to(auth::login)))
        .service(resource("/auth/refresh", web::post().to(auth::refresh)))
        .service(resource("/auth/logout", web::post().to(auth::logout)))
        .service(resource("/auth/userinfo", web::get().to(auth::userinfo)))
        .service(resource(
            "/.well-known/jwks.json",
            web::get().to(well_known::jwks),
        ))
        .service(resource(
            "/.well-known/oauth-authorization-server",
            web::get().to(well_known::metadata),
        ))
        .service(resource(
            "/.well-known/openid-configuration",
            web::get().to(well_known::metadata),
        ))
        .service(resource("/healthz", web::get().to(ops::healthz)))
        .service(resource("/readyz", web::get().to(ops::readyz)))
        .default_service(web::to(not_found));
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

/// Removes expired sessions and grace-window seals from backends without native expiry.
async fn sweep_forever(issuer: web::Data<Issuer>) {
    let period = issuer
        .live
        .current()
        .config
        .tokens
        .reuse_grace
        .clamp(Duration::from_secs(1), Duration::from_secs(30));
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        if let Err(e) = issuer.store.sweep(issuer.clock.now_ms()).await {
            tracing::warn!(error = %crate::error::error_chain(&e), "sweep failed; will retry");
        }
    }
}
