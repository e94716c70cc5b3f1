//! The web console's wiring: `serve --console-*` flags and `mailaudit user`, which manages
//! the console's local accounts (admins and auditors; mailbox owners sign in with their
//! mail credentials instead).

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use mailaudit_console::{ConsoleConfig, ImapServer, LocalRole, Users};
use std::io::BufRead;
use std::path::Path;

#[derive(Args, Debug, Clone)]
pub struct ConsoleArgs {
    /// The IMAP server (host:port) that checks mailbox owners' passwords when they sign in
    /// to the console; without it owners cannot sign in. Plain IMAP unless
    /// --console-imap-tls: then only on loopback or a trusted network.
    #[arg(long = "console-imap")]
    pub imap: Option<String>,
    /// Speak IMAPS (implicit TLS, usually port 993) to --console-imap.
    #[arg(long = "console-imap-tls", requires = "imap")]
    pub imap_tls: bool,
    /// CA certificates (PEM) that may vouch for the IMAPS server.
    #[arg(
        long = "console-imap-ca",
        default_value = "/etc/ssl/certs/ca-certificates.crt"
    )]
    pub imap_ca: std::path::PathBuf,
    /// Domain appended to an owner's login name without `@` to name their mailbox
    /// (`alice` → `alice@DOMAIN`).
    #[arg(long = "console-mail-domain")]
    pub mail_domain: Option<String>,
    /// SMTP relay (host:port, plain SMTP) through which the console mails exports.
    #[arg(long = "console-smtp")]
    pub smtp: Option<String>,
    /// Sender address of mailed exports.
    #[arg(long = "console-mail-from", default_value = "mailaudit@localhost")]
    pub mail_from: String,
    /// Largest export attached to a mail, in bytes; a larger one is announced, not sent.
    #[arg(long = "console-mail-max-bytes", default_value_t = 20 * 1024 * 1024)]
    pub mail_max_bytes: usize,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long = "tls-cert", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long = "tls-key", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Marks console cookies Secure: set it when a TLS proxy serves the console (implied by
    /// --tls-cert).
    #[arg(long = "console-secure-cookies")]
    pub secure_cookies: bool,
}

impl ConsoleArgs {
    pub fn config(&self, data_dir: &Path) -> Result<ConsoleConfig> {
        let mut c = ConsoleConfig::new(data_dir.to_path_buf());
        c.imap = match &self.imap {
            Some(a) if self.imap_tls => Some(ImapServer::tls(a.clone(), &self.imap_ca)?),
            Some(a) => Some(ImapServer::plain(a.clone())),
            None => None,
        };
        c.mail_domain = self.mail_domain.clone();
        c.secure_cookies = self.secure_cookies || self.tls_cert.is_some();
        c.mail = self
            .smtp
            .clone()
            .map(|relay| mailaudit_console::MailConfig {
                relay,
                from: self.mail_from.clone(),
                max_attachment: self.mail_max_bytes,
            });
        Ok(c)
    }
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Adds a console account (or sets a new password and role); reads the password from
    /// the first line of standard input.
    Add {
        name: String,
        #[arg(long, value_parser = ["admin", "auditor"])]
        role: String,
    },
    /// Removes a console account.
    Remove { name: String },
    /// Lists console accounts.
    List,
}

pub fn user(dir: &Path, cmd: UserCommand) -> Result<i32> {
    if !crate::datadir::is_initialised(dir) {
        bail!(
            "{} is not a mailaudit data directory; run `mailaudit init` first",
            dir.display()
        );
    }
    let users = Users::open(dir)?;
    match cmd {
        UserCommand::Add { name, role } => {
            let role: LocalRole = role.parse().map_err(anyhow::Error::msg)?;
            eprintln!("password for {name} (one line on standard input):");
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the password from standard input")?;
            let password = line.trim_end_matches(['\r', '\n']);
            users.set(&name, role, password)?;
            println!("console account {name} ({}) saved", role.as_str());
        }
        UserCommand::Remove { name } => {
            if !users.remove(&name)? {
                bail!("there is no console account `{name}`");
            }
            println!("console account {name} removed");
        }
        UserCommand::List => {
            for (name, role) in users.list()? {
                println!("{name}\t{}", role.as_str());
            }
        }
    }
    Ok(0)
}

/// `serve --demo`: a console admin with a fresh random password, printed once, so the
/// console can be looked at straight away.
pub fn demo_account(dir: &Path) -> Result<()> {
    let mut bytes = [0u8; 9];
    getrandom::getrandom(&mut bytes).context("reading randomness")?;
    let password = hex::encode(bytes);
    Users::open(dir)?.set("demo-admin", LocalRole::Admin, &password)?;
    eprintln!("demo console sign-in (/console/): demo-admin / {password}");
    Ok(())
}
