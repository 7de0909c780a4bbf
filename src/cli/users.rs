//! `latchkey users …`: accounts and their sessions, for operators and support staff. Every
//! command runs the operation the HTTP API runs ([`Accounts`]) and works while a server runs on
//! the same store.

use clap::Subcommand;

use super::{CliError, ConfigArg, load_config, read_secret};
use crate::clock::Clock;
use crate::config::format_timestamp;
use crate::credentials::PasswordHasher;
use crate::flows::{Accounts, FlowError, ProfileChange, check_password_policy, normalize_username};
use crate::store::{self, UserAttributes};

/// The optional profile claims of a user (OIDC Core §5.1), as `users add` and `users set` take
/// them.
#[derive(clap::Args, Debug)]
pub struct ProfileArgs {
    /// The email address (`email`); "" clears it.
    #[arg(long)]
    email: Option<String>,
    /// Whether you vouch for the email (`email_verified`); a changed email is unverified
    /// unless this says otherwise.
    #[arg(long, value_name = "true|false")]
    email_verified: Option<bool>,
    /// The display name (`name`); "" clears it.
    #[arg(long = "name", value_name = "DISPLAY NAME")]
    display_name: Option<String>,
    /// `preferred_username`, when it should not be the username; "" clears it.
    #[arg(long, value_name = "NAME")]
    preferred_username: Option<String>,
}

impl ProfileArgs {
    fn change(&self) -> ProfileChange<'_> {
        ProfileChange {
            email: self.email.as_deref(),
            email_verified: self.email_verified,
            name: self.display_name.as_deref(),
            preferred_username: self.preferred_username.as_deref(),
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum UsersCommand {
    /// Create a user; the password is read from standard input.
    Add {
        #[arg(value_name = "NAME")]
        username: String,
        /// A scope (role) the user holds; repeat for more.
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        #[command(flatten)]
        profile: ProfileArgs,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Give a user scopes; new tokens carry them from the user's next login.
    Grant {
        #[arg(value_name = "NAME")]
        username: String,
        #[arg(value_name = "SCOPE", required = true)]
        scopes: Vec<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Take scopes away; no token carries them from the next refresh on.
    Ungrant {
        #[arg(value_name = "NAME")]
        username: String,
        #[arg(value_name = "SCOPE", required = true)]
        scopes: Vec<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Set the optional profile claims ("" clears one); UserInfo returns them by scope.
    Set {
        #[arg(value_name = "NAME")]
        username: String,
        #[command(flatten)]
        profile: ProfileArgs,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Set a user's password (read from standard input); ends every session of the user.
    Passwd {
        #[arg(value_name = "NAME")]
        username: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Disable a user; ends every session of the user.
    Disable {
        #[arg(value_name = "NAME")]
        username: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Enable a disabled user.
    Enable {
        #[arg(value_name = "NAME")]
        username: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Delete a user and every session; the name can be taken again, inheriting nothing.
    Delete {
        #[arg(value_name = "NAME")]
        username: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// List a user's live sessions, newest first.
    Sessions {
        #[arg(value_name = "NAME")]
        username: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// End every session of a user.
    Logout {
        #[arg(value_name = "NAME")]
        username: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// List the clients a user allowed on the consent page, or withdraw one (`--withdraw`):
    /// its next sign-in asks again.
    Grants {
        #[arg(value_name = "NAME")]
        username: String,
        /// Withdraw the consent given to this client.
        #[arg(long, value_name = "CLIENT_ID")]
        withdraw: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// List users.
    List(ConfigArg),
    /// Check existing names for look-alikes (and record the keys that keep new look-alikes
    /// out; run once after upgrading a Redis store). Exits non-zero when some look alike.
    Check(ConfigArg),
}

impl UsersCommand {
    fn config(&self) -> &ConfigArg {
        match self {
            UsersCommand::Add { config, .. }
            | UsersCommand::Grant { config, .. }
            | UsersCommand::Ungrant { config, .. }
            | UsersCommand::Set { config, .. }
            | UsersCommand::Passwd { config, .. }
            | UsersCommand::Disable { config, .. }
            | UsersCommand::Enable { config, .. }
            | UsersCommand::Delete { config, .. }
            | UsersCommand::Sessions { config, .. }
            | UsersCommand::Logout { config, .. }
            | UsersCommand::Grants { config, .. }
            | UsersCommand::List(config)
            | UsersCommand::Check(config) => config,
        }
    }

    /// Whether the command only reads: then it never creates a store.
    fn reads_only(&self) -> bool {
        matches!(
            self,
            UsersCommand::List(_)
                | UsersCommand::Sessions { .. }
                | UsersCommand::Grants { withdraw: None, .. }
        )
    }
}

/// `1 session`, `2 sessions`.
pub(crate) fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// Rows as columns as wide as their widest cell.
pub(crate) fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// The sessions of `username` a client may have to be told of when they end (back-channel
/// logout); none when no client takes back-channel logouts.
async fn sessions_to_tell(
    config: &crate::config::Config,
    accounts: &Accounts,
    username: &str,
) -> Result<Vec<crate::store::Session>, CliError> {
    if !crate::flows::back_channel::any_client_wants(config) {
        return Ok(Vec::new());
    }
    accounts
        .sessions(username)
        .await
        .map_err(CliError::from_display)
}

/// Sends the logout tokens of `ended` and says how many clients were told. The sessions have
/// ended whatever happens here: a failure is reported, not an error.
async fn tell_clients(config: &crate::config::Config, ended: &[crate::store::Session]) {
    if ended.is_empty() {
        return;
    }
    let keys = match crate::keys::KeyRing::load(config) {
        Ok(keys) => keys,
        Err(e) => {
            eprintln!("warning: no back-channel logout sent: the signing keys did not load: {e}");
            return;
        }
    };
    let notices =
        crate::flows::back_channel::logout_notices(config, &keys, ended, Clock::system().now_ms());
    if notices.is_empty() {
        return;
    }
    let total = notices.len();
    let delivered = crate::outbound::deliver_now(notices).await;
    if delivered == total {
        println!(
            "back-channel logout: told {}",
            count(total, "client session")
        );
    } else {
        eprintln!(
            "warning: back-channel logout: told {delivered} of {} (the log says why)",
            count(total, "client session")
        );
    }
}

/// A store that did not answer, named (its URL without a password, and where that came from)
/// with the cause (connection refused, TLS, authentication...).
fn unreachable_store(config: &crate::config::Config, e: &store::StoreError) -> CliError {
    CliError::from_display(format!(
        "the session store at {} did not answer: {}",
        config.store.described(),
        match e {
            store::StoreError::Unavailable(cause) => crate::telemetry::error_chain(&**cause),
            other => crate::telemetry::error_chain(other),
        }
    ))
}

fn scopes_of(values: &[String]) -> Result<Vec<String>, CliError> {
    crate::flows::scopes::parse(Some(&values.join(" ")))
        .map(Option::unwrap_or_default)
        .map_err(CliError::from_display)
}

pub async fn run(cmd: UsersCommand) -> Result<(), CliError> {
    let config = load_config(&cmd.config().path)?;
    let store = if cmd.reads_only() {
        store::open_existing(&config.store).await
    } else {
        store::open_configured(&config.store).await
    }
    .map_err(|e| unreachable_store(&config, &e))?;
    let hasher = PasswordHasher::new(&config.passwords).map_err(CliError::from_display)?;
    let accounts = Accounts::new(
        store,
        hasher,
        Clock::system(),
        config.revocation_retention(),
    );
    let fail = |e: FlowError| match e {
        FlowError::StoreUnavailable(e) => unreachable_store(&config, &e),
        other => CliError::from_display(other),
    };
    match cmd {
        UsersCommand::Add {
            username,
            scopes,
            profile,
            ..
        } => {
            normalize_username(&username).map_err(fail)?;
            let scopes = scopes_of(&scopes)?;
            let password = read_secret("password")?;
            check_password_policy("password", &password, &config.users).map_err(fail)?;
            let mut attributes = UserAttributes {
                scopes,
                ..UserAttributes::default()
            };
            profile.change().apply(&mut attributes).map_err(fail)?;
            let user = accounts
                .create_user(&username, &password, attributes)
                .await
                .map_err(fail)?;
            println!("created user {} ({})", user.username, user.id);
        }
        UsersCommand::Grant {
            username, scopes, ..
        } => {
            let user = accounts
                .grant(&username, &scopes_of(&scopes)?)
                .await
                .map_err(fail)?;
            println!("{} holds: {}", user.username, user.scopes.join(" "));
        }
        UsersCommand::Ungrant {
            username, scopes, ..
        } => {
            let user = accounts
                .ungrant(&username, &scopes_of(&scopes)?)
                .await
                .map_err(fail)?;
            println!(
                "{} holds: {} (taken scopes leave every session at its next refresh)",
                user.username,
                user.scopes.join(" ")
            );
        }
        UsersCommand::Set {
            username, profile, ..
        } => {
            let user = accounts
                .set_profile(&username, profile.change())
                .await
                .map_err(fail)?;
            println!(
                "{}: email {}{}, name {}, preferred_username {}",
                user.username,
                user.email.as_deref().unwrap_or("-"),
                if user.email_verified {
                    " (verified)"
                } else {
                    ""
                },
                user.name.as_deref().unwrap_or("-"),
                user.preferred_username.as_deref().unwrap_or(&user.username)
            );
        }
        UsersCommand::Passwd { username, .. } => {
            accounts.find(&username).await.map_err(fail)?;
            let password = read_secret("password")?;
            check_password_policy("password", &password, &config.users).map_err(fail)?;
            let ending = sessions_to_tell(&config, &accounts, &username).await?;
            let n = accounts
                .set_password(&username, &password)
                .await
                .map_err(fail)?;
            println!(
                "password changed for {username}; {} ended",
                count(n, "session")
            );
            tell_clients(&config, &ending).await;
        }
        UsersCommand::Disable { username, .. } => {
            let ending = sessions_to_tell(&config, &accounts, &username).await?;
            let n = accounts.disable(&username).await.map_err(fail)?;
            println!("disabled {username}; {} ended", count(n, "session"));
            tell_clients(&config, &ending).await;
        }
        UsersCommand::Enable { username, .. } => {
            accounts.enable(&username).await.map_err(fail)?;
            println!("enabled {username}");
        }
        UsersCommand::Delete { username, .. } => {
            let ending = sessions_to_tell(&config, &accounts, &username).await?;
            let n = accounts.delete(&username).await.map_err(fail)?;
            println!("deleted {username}; {} ended", count(n, "session"));
            tell_clients(&config, &ending).await;
        }
        UsersCommand::Sessions { username, .. } => {
            let sessions = accounts.sessions(&username).await.map_err(fail)?;
            let rows: Vec<Vec<String>> = sessions
                .iter()
                .map(|s| {
                    vec![
                        s.id.to_string(),
                        s.client_id.clone(),
                        format_timestamp(s.created_at),
                        format_timestamp(s.last_used_at),
                        s.ip.clone(),
                        s.user_agent.chars().take(60).collect(),
                    ]
                })
                .collect();
            print_table(
                &["SID", "CLIENT", "CREATED", "LAST USED", "IP", "USER AGENT"],
                &rows,
            );
            println!("{}", count(sessions.len(), "session"));
        }
        UsersCommand::Logout { username, .. } => {
            let user = accounts.find(&username).await.map_err(fail)?;
            let ending = sessions_to_tell(&config, &accounts, &username).await?;
            let n = accounts.end_all_sessions(&user.id).await.map_err(fail)?;
            println!("{} of {username} ended", count(n, "session"));
            tell_clients(&config, &ending).await;
        }
        UsersCommand::Grants {
            username,
            withdraw: Some(client_id),
            ..
        } => {
            if !accounts
                .withdraw_grant(&username, &client_id)
                .await
                .map_err(fail)?
            {
                return Err(CliError(format!("{username} has not allowed {client_id}")));
            }
            println!("withdrew {username}'s consent to {client_id}");
        }
        UsersCommand::Grants { username, .. } => {
            let grants = accounts.grants(&username).await.map_err(fail)?;
            let rows: Vec<Vec<String>> = grants
                .iter()
                .map(|g| {
                    vec![
                        g.client_id.clone(),
                        format_timestamp(g.granted_at),
                        g.scope.clone(),
                    ]
                })
                .collect();
            print_table(&["CLIENT", "GRANTED", "SCOPES"], &rows);
            println!("{}", count(grants.len(), "consent"));
        }
        UsersCommand::Check(_) => {
            let groups = accounts.look_alikes().await.map_err(fail)?;
            for group in &groups {
                println!(
                    "these names look alike: {} (the first keeps the name; rename or delete \
                     the others)",
                    group.join(", ")
                );
            }
            if !groups.is_empty() {
                return Err(CliError(format!(
                    "{} of look-alike names",
                    count(groups.len(), "group")
                )));
            }
            println!("no two names look alike");
        }
        UsersCommand::List(_) => {
            let users = accounts.list().await.map_err(fail)?;
            let rows: Vec<Vec<String>> = users
                .iter()
                .map(|u| {
                    vec![
                        u.username.clone(),
                        u.id.clone(),
                        if u.disabled { "disabled" } else { "active" }.to_owned(),
                        format_timestamp(u.created_at),
                        u.scopes.join(" "),
                    ]
                })
                .collect();
            print_table(&["USERNAME", "ID", "STATUS", "CREATED", "SCOPES"], &rows);
        }
    }
    Ok(())
}
