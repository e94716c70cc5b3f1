//! The Dovecot source of mailaudit: turns Dovecot 2.3 events (the event exporter's `http-post`
//! JSON bodies, or the same JSON written by `transport = log`) and Dovecot's own log lines
//! (login/disconnect lines, `mail_log` plugin lines, LMTP and Sieve delivery lines) into
//! `Observation`s, one per command, with Exchange's operation names.
//!
//! It must never panic on any input, never do I/O, never write to the store (the pipeline
//! does), and never guess: a message it cannot name is an item whose `unresolved` says why.
//! It sets actor, acting_as, mailbox and administrative; classification (Owner, Delegate,
//! Admin) is the pipeline's.
//!
//! Parsing (`event`, `logline`, `logtime`, `imap`) is separate from deciding (`classify`, pure
//! functions) and from correlating (`correlate`, the serialisable state).
//!
//! # What comes from where
//!
//! - **Events** (`auth_request_finished`, `imap_command_finished`, `mail_opened`,
//!   `mail_expunged`, `mail_expunge_requested`, `mail_delivery_finished`,
//!   `managesieve_command_finished`) are canonical: one command event is one observation.
//!   Sub-events (`mail_opened` with `reason_code` `imap:fetch_body`, `mail_expunged`) are
//!   attached to the command of the same session whose start..end interval holds them; they
//!   may arrive before or after it.
//! - **Log lines** complement events: `mail_log` lines give Message-ID, Subject and size by
//!   (owner, folder, UID), and the new UIDs of copies; login lines give TLS. A session that has
//!   no command events (only a log, or POP3) gets its records from the lines themselves.
//! - Nothing is reported twice: a session's `MailboxLogin` comes from the auth event, or from
//!   the login line when no event arrives within the window; likewise its `MailboxLogout`.
//!
//! # Parameters it sets
//!
//! `mechanism` and, for a failed login line, `attempts` (MailboxLogin); `flags`, the change as
//! asked (`+FLAGS (\Deleted)`, STORE); `flags_after`, the flags as logged (log-only Update);
//! `destination_uids`, the new UIDs of copied messages; `destination_mailbox` when a copy or
//! move goes to another user's mailbox; `identifier`, `rights` (SETACL/DELETEACL); `query`
//! (SEARCH/SORT/THREAD); `script_name`, `command`, `new_script_name` (ManageSieve);
//! `forwarded_to` (a Sieve redirect of a delivery); `count` (POP3 summaries); `disconnect`,
//! the reason when a session ended other than by logging out.
//!
//! # Timing
//!
//! An observation is held until it is complete or `correlation_window_secs` after its time
//! have passed ([`DovecotSource::flush_due`]). Year-less log stamps (`Nov 22 13:49:12`) take
//! the year nearest the latest event seen (else the latest line, else the clock); stamps
//! without an offset are taken as UTC.
//!
//! # ManageSieve
//!
//! `PUTSCRIPT`/`SETACTIVE`/`DELETESCRIPT`/`RENAMESCRIPT` become `UpdateInboxRules` with
//! parameters `script_name` and `command`. Dovecot 2.3's event does not carry the script
//! text, so no `script` parameter is produced: a caller that wants the rules themselves must
//! read them from the user's sieve directory (the `sieve` plugin setting) when it sees this
//! observation.

mod classify;
mod correlate;
mod event;
mod imap;
mod logline;
mod logtime;

use mailaudit_model::{Observation, Timestamp};
use serde::{Deserialize, Serialize};

/// How this Dovecot installation names things.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DovecotConfig {
    /// Prefix of the shared namespace, e.g. "shared/" (mailbox "shared/carol/INBOX" = carol's
    /// INBOX, reached by a delegate).
    pub shared_prefix: String,
    /// The namespace hierarchy separator.
    pub separator: char,
    /// Folders that are the special-use \Trash (a move/copy there is MoveToDeletedItems).
    pub trash_folders: Vec<String>,
    /// Domain appended to bare logins ("carol" -> "carol@example.com") when set.
    pub default_domain: Option<String>,
    /// How long a command's observation may wait for correlating lines before it is emitted
    /// anyway.
    pub correlation_window_secs: u64,
}

impl Default for DovecotConfig {
    fn default() -> Self {
        DovecotConfig {
            shared_prefix: "shared/".to_string(),
            separator: '/',
            trash_folders: vec![
                "Trash".to_string(),
                "Deleted Items".to_string(),
                "Deleted Messages".to_string(),
            ],
            default_domain: None,
            correlation_window_secs: 5,
        }
    }
}

/// The whole correlation state. Serializable so a log follower can persist it atomically
/// with the records it produced (exactly-once across restarts).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DovecotSource {
    state: correlate::State,
}

/// Counters since the source was created (they persist with its state).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStats {
    /// Events received and parsed (from `push_event_json` or inside log lines).
    pub events: u64,
    /// Lines given to `push_log_line`, whatever they were.
    pub log_lines: u64,
    /// Observations emitted.
    pub observations: u64,
    /// Inputs that reported nothing auditable (NOOP, header fetches, unknown lines and
    /// events), and log lines or sub-events that no command claimed within the window.
    pub ignored: u64,
    /// Inputs refused with an error.
    pub malformed: u64,
}

/// Why an input was refused.
#[derive(Debug, thiserror::Error)]
pub enum DovecotError {
    /// The text is not JSON.
    #[error(
        "{reference}: malformed Dovecot event JSON at line {line}, column {column}: {message}"
    )]
    Json {
        reference: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// The text is JSON but not a Dovecot event (no `event` name, no times, wrong shapes).
    #[error("{reference}: not a Dovecot event: {reason}")]
    NotAnEvent { reference: String, reason: String },
}

impl DovecotSource {
    pub fn new() -> Self {
        Self::default()
    }

    /// One exporter event, exactly as Dovecot's `http-post` transport POSTs it (one JSON
    /// object). `reference` identifies the origin (e.g. "http:12345" or "dovecot.log:17") and
    /// goes into provenance.reference of observations it completes.
    pub fn push_event_json(
        &mut self,
        cfg: &DovecotConfig,
        text: &str,
        reference: &str,
    ) -> Result<Vec<Observation>, DovecotError> {
        self.state.push_event(cfg, text, reference)
    }

    /// One line of Dovecot's log file: the `mail_log` plugin lines, login/disconnect lines,
    /// and events exported with `transport = log` (written by the stats process as an Info
    /// line: `Nov 22 13:49:12 stats: Info: {"event":…}`; bare JSON lines, as
    /// `transport = file` writes them, are accepted too). Unknown lines are ignored and
    /// counted, never errors, unless they claim to be an event and are malformed.
    pub fn push_log_line(
        &mut self,
        cfg: &DovecotConfig,
        line: &str,
        reference: &str,
    ) -> Result<Vec<Observation>, DovecotError> {
        self.state.push_line(cfg, line, reference)
    }

    /// Emits observations whose correlation window has passed (call periodically with the
    /// current time, and with the time of the latest line in batch/import mode). Also forgets
    /// sessions that ended long ago.
    pub fn flush_due(&mut self, cfg: &DovecotConfig, now: Timestamp) -> Vec<Observation> {
        self.state.flush_due(cfg, now)
    }

    /// Emits everything pending (end of an import file, shutdown). Session knowledge (who is
    /// logged in, as whom) is kept.
    pub fn flush_all(&mut self, cfg: &DovecotConfig) -> Vec<Observation> {
        self.state.flush_all(cfg)
    }

    pub fn stats(&self) -> SourceStats {
        self.state.stats
    }
}
