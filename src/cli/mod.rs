//! The command line (`docs/cli.md`). Each command loads what it needs and nothing more; account
//! commands ([`users`]) run the same operations as the HTTP API ([`crate::flows::Accounts`]).

mod healthcheck;
mod users;

pub use users::UsersCommand;

use std::io::Read as _;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::clock::{Clock, system_ms};
use crate::config::{self, Alg, Config, PasswordSettings, format_timestamp};
use crate::credentials::{MAX_PASSWORD_BYTES, Password, PasswordHasher};
use crate::keys::schedule::schedule_warnings;
use crate::keys::{self, KeyRing, files, key_state};
use crate::startup::Application;
use crate::state::{Applies, RUNNING_VALUES_META, RestartOnlyValues, paths};
use crate::store;

#[derive(Parser, Debug)]
#[command(
    name = "latchkey",
    version,
    about = "A token issuer: JWT access tokens, rotating refresh tokens, published keys."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ConfigArg {
    /// The config file.
    #[arg(short = 'c', long = "config", env = "LATCHKEY_CONFIG", default_value = config::DEFAULT_PATH)]
    pub path: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the issuer.
    Serve(ConfigArg),
    /// Signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// User accounts.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Read a client secret on standard input and print its argon2id hash, at the cost the
    /// config sets (OWASP's default when the config cannot be read).
    HashSecret(ConfigArg),
    /// Print the OpenAPI 3.1 document of the HTTP API (as served at /openapi.json).
    Openapi,
    /// Exit 0 when a latchkey answers 200 at URL (for container HEALTHCHECKs, where no curl is).
    Healthcheck {
        /// A loopback http URL.
        #[arg(default_value = "http://127.0.0.1:8080/healthz")]
        url: String,
    },
    /// Configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Write a new PKCS#8 PEM private key (mode 0600) and print its [[keys]] snippet.
    Generate {
        #[arg(long, value_parser = ["ES256", "RS256", "EdDSA"])]
        alg: String,
        /// Defaults to `<year>-<month>-<es|rs|ed>-<random>`.
        #[arg(long)]
        kid: Option<String>,
        #[arg(long, default_value = "keys")]
        dir: PathBuf,
        /// RSA modulus size.
        #[arg(long, default_value_t = 2048)]
        bits: usize,
        /// The config the key is for: the printed path is relative to its directory, and it
        /// names the key whose window the new one ends.
        #[command(flatten)]
        config: ConfigArg,
    },
    /// One row per configured key: its state now, signing window and publication.
    List(ConfigArg),
    /// Generate a key pair inside an HSM token over PKCS#11 (the private key never leaves it)
    /// and print its [[keys]] snippet.
    GenerateHsm {
        #[arg(long, value_parser = ["ES256", "RS256"])]
        alg: String,
        #[arg(long)]
        kid: String,
        /// The PKCS#11 module (a shared library), e.g. /usr/lib/softhsm/libsofthsm2.so.
        #[arg(long)]
        module: PathBuf,
        /// The token's label.
        #[arg(long)]
        token: String,
        /// The key's label on the token (default: the kid).
        #[arg(long)]
        label: Option<String>,
        /// The environment variable holding the user PIN.
        #[arg(
            long,
            conflicts_with = "pin_file",
            required_unless_present = "pin_file"
        )]
        pin_env: Option<String>,
        /// A file holding the user PIN.
        #[arg(long)]
        pin_file: Option<PathBuf>,
        /// RSA modulus size.
        #[arg(long, default_value_t = 2048)]
        bits: u64,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate the config, key files and key schedule: one `error:` or `warning:` line per
    /// finding; a non-zero exit on any error, and on warnings too with --strict.
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// Treat warnings as errors (for CI pipelines).
        #[arg(long)]
        strict: bool,
    },
}

/// A failed command: printed as `latchkey: <message>` and a non-zero exit.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CliError(pub String);

impl CliError {
    pub(crate) fn from_display(e: impl std::fmt::Display) -> Self {
        CliError(e.to_string())
    }
}

/// How often `serve` looks for a changed config or key file (SIGHUP reloads at once).
const CONFIG_POLL: std::time::Duration = std::time::Duration::from_secs(2);

pub async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Serve(c) => serve(&c.path).await,
        Command::Keys(KeysCommand::Generate {
            alg,
            kid,
            dir,
            bits,
            config,
        }) => keys_generate(&alg, kid, &dir, bits, &config.path),
        Command::Keys(KeysCommand::List(c)) => keys_list(&c.path),
        Command::Keys(KeysCommand::GenerateHsm {
            alg,
            kid,
            module,
            token,
            label,
            pin_env,
            pin_file,
            bits,
        }) => keys_generate_hsm(&alg, &kid, module, token, label, pin_env, pin_file, bits),
        Command::Users(cmd) => users::run(cmd).await,
        Command::Healthcheck { url } => healthcheck::run(&url),
        Command::Openapi => {
            println!("{}", crate::routes::openapi::json());
            Ok(())
        }
        Command::HashSecret(c) => {
            let settings = Config::load(&c.path)
                .map(|config| config.passwords)
                .unwrap_or_else(|_| PasswordSettings::default());
            let secret = read_secret("secret")?;
            let hasher = PasswordHasher::new(&settings).map_err(CliError::from_display)?;
            println!(
                "{}",
                hasher.hash(&secret).await.map_err(CliError::from_display)?
            );
            Ok(())
        }
        Command::Config(ConfigCommand::Check { config, strict }) => {
            config_check(&config.path, strict).await
        }
    }
}

pub(crate) fn load_config(path: &Path) -> Result<Config, CliError> {
    Config::load(path).map_err(CliError::from_display)
}

async fn serve(path: &Path) -> Result<(), CliError> {
    let config = load_config(path)?;
    crate::telemetry::init(config.log_format).map_err(CliError)?;
    for kid in keys::generate_missing(&config).map_err(CliError::from_display)? {
        tracing::warn!(
            kid,
            "!!! GENERATED A NEW SIGNING KEY because its file was missing and the config says \
             generate_if_missing = true. This is for development only: in production, create keys \
             with `latchkey keys generate` and remove generate_if_missing !!!"
        );
    }
    for warning in config.warnings() {
        tracing::warn!(event = "config.warning", "{warning}");
    }
    let app = Application::build(config.clone(), Clock::system())
        .await
        .map_err(CliError::from_display)?
        .watch_config(path.to_owned(), CONFIG_POLL)
        .stop_on_signals(config.shutdown);
    tracing::info!(
        issuer = %config.issuer,
        addr = %config.listen.ip(),
        port = app.port(),
        "latchkey is listening"
    );
    app.run_until_stopped()
        .await
        .map_err(CliError::from_display)
}

/// `path` as seen from `base` (both made absolute first): `../keys/k.pem` from `config/`.
fn relative_to(path: &Path, base: &Path) -> PathBuf {
    let (Ok(path), Ok(base)) = (std::path::absolute(path), std::path::absolute(base)) else {
        return path.to_owned();
    };
    let (path_parts, base_parts): (Vec<_>, Vec<_>) =
        (path.components().collect(), base.components().collect());
    let common = path_parts
        .iter()
        .zip(&base_parts)
        .take_while(|(a, b)| a == b)
        .count();
    if common == 0 {
        return path;
    }
    let mut relative = PathBuf::new();
    for _ in common..base_parts.len() {
        relative.push("..");
    }
    for part in &path_parts[common..] {
        relative.push(part);
    }
    relative
}

#[allow(clippy::too_many_arguments)]
fn keys_generate_hsm(
    alg: &str,
    kid: &str,
    module: PathBuf,
    token: String,
    label: Option<String>,
    pin_env: Option<String>,
    pin_file: Option<PathBuf>,
    bits: u64,
) -> Result<(), CliError> {
    let alg = Alg::parse(alg).ok_or_else(|| CliError("--alg must be ES256 or RS256".into()))?;
    if alg == Alg::RS256 && ![2048, 3072, 4096].contains(&bits) {
        return Err(CliError("--bits must be 2048, 3072 or 4096".into()));
    }
    if !config::valid_identifier(kid) {
        return Err(CliError(
            "--kid must be 1-64 characters of A-Z a-z 0-9 . _ -".into(),
        ));
    }
    let pin = match (pin_env, pin_file) {
        (Some(var), _) => config::PinSource::Env(var),
        (None, Some(file)) => config::PinSource::File(file),
        (None, None) => return Err(CliError("--pin-env or --pin-file is required".into())),
    };
    let hsm = config::Pkcs11Key {
        module,
        token,
        key_label: label.unwrap_or_else(|| kid.to_owned()),
        pin,
    };
    crate::keys::pkcs11::generate(alg, &hsm, bits)
        .map_err(|e| CliError(format!("key {kid}: {e}")))?;
    let now = system_ms();
    let not_before = (now / 3_600_000 + 25) * 3_600_000;
    let not_after = not_before + 90 * 86_400_000;
    println!("{kid}");
    println!();
    println!("# Paste into your config; the PIN stays where it is (never in the config).");
    println!("[[keys]]");
    println!("kid = \"{kid}\"");
    println!("alg = \"{}\"", alg.as_str());
    println!("not_before = \"{}\"", format_timestamp(not_before));
    println!("not_after = \"{}\"", format_timestamp(not_after));
    println!("[keys.pkcs11]");
    println!("module = \"{}\"", hsm.module.display());
    println!("token = \"{}\"", hsm.token);
    println!("key_label = \"{}\"", hsm.key_label);
    match &hsm.pin {
        config::PinSource::Env(var) => println!("pin_env = \"{var}\""),
        config::PinSource::File(file) => println!("pin_file = \"{}\"", file.display()),
    }
    Ok(())
}

fn keys_generate(
    alg: &str,
    kid: Option<String>,
    dir: &Path,
    bits: usize,
    config_path: &Path,
) -> Result<(), CliError> {
    let alg =
        Alg::parse(alg).ok_or_else(|| CliError("--alg must be ES256, RS256 or EdDSA".into()))?;
    if alg == Alg::RS256 && ![2048, 3072, 4096].contains(&bits) {
        return Err(CliError("--bits must be 2048, 3072 or 4096".into()));
    }
    let now = system_ms();
    let kid = match kid {
        Some(kid) => kid,
        None => {
            let month = &format_timestamp(now)[..7];
            let family = match alg {
                Alg::ES256 => "es",
                Alg::RS256 => "rs",
                Alg::EdDSA => "ed",
            };
            format!("{month}-{family}-{}", &crate::tokens::new_jti()[..6])
        }
    };
    if !config::valid_identifier(&kid) {
        return Err(CliError(
            "--kid must be 1-64 characters of A-Z a-z 0-9 . _ -".into(),
        ));
    }
    let path = dir.join(format!("{kid}.pem"));
    let der = files::generate(alg, bits).map_err(CliError::from_display)?;
    files::write_private_pem(&path, &der).map_err(CliError::from_display)?;
    // Publish a day before signing, well beyond any sane jwks.max_age; sign for 90 days.
    let not_before = (now / 3_600_000 + 25) * 3_600_000;
    let not_after = not_before + 90 * 86_400_000;
    // Paths in a config resolve against its directory.
    let config = Config::load(config_path).ok();
    let shown = match config_path.parent() {
        Some(base) if config.is_some() => relative_to(&path, base),
        _ => path.clone(),
    };
    println!("{kid}");
    println!();
    println!(
        "# Paste into {} (resource servers must see a key before it signs:",
        config_path.display()
    );
    println!("# keep not_before at least jwks.max_age after this entry is first deployed).");
    if let Some(current) = config
        .as_ref()
        .and_then(|c| keys::scheduled_signer(&c.keys, now))
    {
        println!("# Then end the current key's window where this one starts: in the entry of");
        println!(
            "# \"{}\", set not_after = \"{}\".",
            current.kid,
            format_timestamp(not_before)
        );
    }
    println!("[[keys]]");
    println!("kid = \"{kid}\"");
    println!("alg = \"{alg}\"");
    println!("path = \"{}\"", shown.display());
    println!("not_before = \"{}\"", format_timestamp(not_before));
    println!("not_after = \"{}\"", format_timestamp(not_after));
    Ok(())
}

fn keys_list(path: &Path) -> Result<(), CliError> {
    let config = load_config(path)?;
    let tail = config.publish_tail();
    let now = system_ms();
    let rows: Vec<Vec<String>> = config
        .keys
        .iter()
        .map(|spec| {
            vec![
                spec.kid.clone(),
                spec.alg.to_string(),
                key_state(&config.keys, tail, spec, now).to_string(),
                format_timestamp(spec.not_before),
                format_timestamp(spec.not_after),
                if spec.revoked {
                    "-".to_string()
                } else {
                    format_timestamp(config.published_until(spec))
                },
            ]
        })
        .collect();
    users::print_table(
        &[
            "KID",
            "ALG",
            "STATE",
            "SIGNS FROM",
            "SIGNS UNTIL",
            "PUBLISHED UNTIL",
        ],
        &rows,
    );
    Ok(())
}

async fn config_check(path: &Path, strict: bool) -> Result<(), CliError> {
    let config = Config::load(path).map_err(|e| {
        CliError(
            e.problems
                .iter()
                .map(|p| format!("error: {p}"))
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })?;
    // A config that does not load is one error per problem, printed by `main`.
    let now = system_ms();
    let mut errors = Vec::new();
    let mut warnings = config.warnings();
    if let Err(e) = KeyRing::load(&config) {
        errors.push(e.to_string());
    }
    // The schedule is judged against the history every instance shares through the store, and
    // restart-only fields against what the running server recorded there.
    match store::open_existing(&config.store).await {
        Ok(store) => {
            match store.key_publications().await {
                Ok(history) => warnings.extend(schedule_warnings(&config, &history, now)),
                Err(e) => warnings.push(format!(
                    "store: cannot read the key publication history: {e}"
                )),
            }
            if let Ok(Some(running)) = store.get_meta(RUNNING_VALUES_META).await
                && let Ok(running) = serde_json::from_str::<RestartOnlyValues>(&running)
            {
                let restart_only: Vec<&str> = paths(Applies::Restart).collect();
                for field in running.changes(&RestartOnlyValues::of(&config)) {
                    warnings.push(format!(
                        "{field} differs from the running server's; it takes effect only after a \
                         restart (restart-only: {})",
                        restart_only.join(", ")
                    ));
                }
            }
        }
        Err(e) => {
            // Without the shared history the schedule is judged as a first deployment: gaps
            // and the coming end still show.
            warnings.push(format!(
                "store: cannot open it; the key schedule is checked without the publication \
                 history: {e}"
            ));
            warnings.extend(schedule_warnings(&config, &[], now));
        }
    }
    // Findings are diagnostics: standard error, one line each.
    for warning in &warnings {
        eprintln!("latchkey: warning: {warning}");
    }
    for error in &errors {
        eprintln!("latchkey: error: {error}");
    }
    if !errors.is_empty() {
        return Err(CliError(format!(
            "{}: {} error(s), {} warning(s)",
            path.display(),
            errors.len(),
            warnings.len()
        )));
    }
    if strict && !warnings.is_empty() {
        return Err(CliError(format!(
            "{}: {} warning(s), refused with --strict",
            path.display(),
            warnings.len()
        )));
    }
    println!(
        "{}: ok ({} keys{})",
        path.display(),
        config.keys.len(),
        if warnings.is_empty() {
            String::new()
        } else {
            format!(", {} warning(s)", warnings.len())
        }
    );
    for line in keys::signing_summary(&config.keys, now) {
        println!("  {line}");
    }
    Ok(())
}

/// Reads a secret from standard input (never argv, which other users can see): one line,
/// without its line ending. At a terminal it prompts and turns echo off while typing.
pub(crate) fn read_secret(what: &str) -> Result<Password, CliError> {
    use std::io::{BufRead, IsTerminal};
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprint!("{what}: ");
        set_terminal_echo(false);
    }
    let mut line = String::new();
    let read = std::io::stdin()
        .lock()
        .take(MAX_PASSWORD_BYTES as u64 + 2)
        .read_line(&mut line);
    if interactive {
        set_terminal_echo(true);
        eprintln!();
    }
    read.map_err(|e| CliError(format!("cannot read the {what} from standard input: {e}")))?;
    let line = line.trim_end_matches(['\n', '\r']).to_owned();
    if line.is_empty() {
        return Err(CliError(format!("no {what} on standard input")));
    }
    if line.len() > MAX_PASSWORD_BYTES {
        return Err(CliError(format!(
            "the {what} is longer than {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(Password::new(line))
}

/// Best effort through `stty`, which acts on the terminal it inherits as standard input.
fn set_terminal_echo(on: bool) {
    let _ = std::process::Command::new("stty")
        .arg(if on { "echo" } else { "-echo" })
        .stdin(std::process::Stdio::inherit())
        .status();
}
