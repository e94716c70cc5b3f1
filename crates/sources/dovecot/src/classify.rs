//! Decisions, as pure functions over parsed values: which Exchange operation a Dovecot
//! command or log line is, whose mailbox a folder name belongs to, who acted and as whom.
//! No state and no I/O; it must never panic, and it never decides Owner/Delegate/Admin (the
//! pipeline classifies from actor, acting_as and mailbox).

use crate::imap::{FlagOp, StoreArgs};
use crate::DovecotConfig;
use mailaudit_model::{Operation, OperationResult};

/// What an IMAP command means for the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CommandClass {
    FolderBind,
    Fetch,
    Store,
    Copy,
    Move,
    Expunge,
    Append,
    FolderCreate,
    FolderDelete,
    FolderRename,
    SetAcl,
    DeleteAcl,
    Search,
    Logout,
    Id,
    /// NOOP, CAPABILITY, IDLE, LIST, STATUS, …: nothing to record.
    Ignored,
}

/// Classifies `cmd_name` (`UID MOVE`); the flag says whether the set is of UIDs.
pub(crate) fn classify_command(cmd_name: &str) -> (CommandClass, bool) {
    let upper = cmd_name.trim().to_ascii_uppercase();
    let (name, by_uid) = match upper.strip_prefix("UID ") {
        Some(rest) => (rest.trim(), true),
        None => (upper.as_str(), false),
    };
    let class = match name {
        "SELECT" | "EXAMINE" => CommandClass::FolderBind,
        "FETCH" => CommandClass::Fetch,
        "STORE" => CommandClass::Store,
        "COPY" => CommandClass::Copy,
        "MOVE" => CommandClass::Move,
        "EXPUNGE" | "CLOSE" => CommandClass::Expunge,
        "APPEND" => CommandClass::Append,
        "CREATE" => CommandClass::FolderCreate,
        "DELETE" => CommandClass::FolderDelete,
        "RENAME" => CommandClass::FolderRename,
        "SETACL" => CommandClass::SetAcl,
        "DELETEACL" => CommandClass::DeleteAcl,
        "SEARCH" | "SORT" | "THREAD" => CommandClass::Search,
        "LOGOUT" => CommandClass::Logout,
        "ID" => CommandClass::Id,
        _ => CommandClass::Ignored,
    };
    (class, by_uid)
}

/// A login name as mailaudit records it: trimmed, lower-cased, `@default_domain` appended
/// to a bare login when configured. `None` for an empty name.
pub(crate) fn identity(cfg: &DovecotConfig, raw: &str) -> Option<String> {
    let name = raw.trim().to_lowercase();
    if name.is_empty() {
        return None;
    }
    match cfg.default_domain.as_deref().map(str::trim) {
        Some(domain) if !domain.is_empty() && !name.contains('@') => {
            Some(format!("{name}@{}", domain.to_lowercase()))
        }
        _ => Some(name),
    }
}

/// Whose mailbox a folder name is in, and the folder's name there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Place {
    /// The owner, normalised by [`identity`].
    pub owner: String,
    pub folder: Option<String>,
}

/// `shared/carol/INBOX` → carol's `INBOX`; `Projects` → the user's own `Projects`.
pub(crate) fn place(cfg: &DovecotConfig, user: &str, name: Option<&str>) -> Option<Place> {
    let own = identity(cfg, user);
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return own.map(|owner| Place {
            owner,
            folder: None,
        });
    };
    if !cfg.shared_prefix.is_empty() {
        if let Some(rest) = name.strip_prefix(cfg.shared_prefix.as_str()) {
            let (who, folder) = match rest.split_once(cfg.separator) {
                Some((w, f)) => (w, Some(f)),
                None => (rest, None),
            };
            if let Some(owner) = identity(cfg, who) {
                return Some(Place {
                    owner,
                    folder: folder.filter(|f| !f.is_empty()).map(normalize_inbox),
                });
            }
        }
    }
    own.map(|owner| Place {
        owner,
        folder: Some(normalize_inbox(name)),
    })
}

/// INBOX is case-insensitive in IMAP.
fn normalize_inbox(folder: &str) -> String {
    if folder.eq_ignore_ascii_case("INBOX") {
        "INBOX".to_string()
    } else {
        folder.to_string()
    }
}

/// Whether a folder (of its owner) is the special-use \Trash.
pub(crate) fn is_trash(cfg: &DovecotConfig, folder: &str) -> bool {
    let under_inbox = folder
        .strip_prefix("INBOX")
        .and_then(|f| f.strip_prefix(cfg.separator));
    cfg.trash_folders.iter().any(|t| {
        folder.eq_ignore_ascii_case(t) || under_inbox.is_some_and(|f| f.eq_ignore_ascii_case(t))
    })
}

/// COPY/MOVE: `Copy`/`Move`, or `MoveToDeletedItems` when the destination is \Trash.
pub(crate) fn copy_operation(cfg: &DovecotConfig, is_move: bool, dest: Option<&str>) -> Operation {
    if dest.is_some_and(|d| is_trash(cfg, d)) {
        Operation::MoveToDeletedItems
    } else if is_move {
        Operation::Move
    } else {
        Operation::Copy
    }
}

/// Which change a STORE makes, and so which `mail_log` lines report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum StoreKind {
    /// Sets \Deleted: `delete` lines.
    SoftDelete,
    /// Clears \Deleted: `undelete` lines.
    Undelete,
    /// Any other flag: `flag_change` lines.
    Update,
}

pub(crate) fn store_kind(args: &StoreArgs) -> StoreKind {
    let deleted = args
        .flags
        .iter()
        .any(|f| f.eq_ignore_ascii_case("\\Deleted"));
    match (args.op, deleted) {
        (FlagOp::Add | FlagOp::Replace, true) => StoreKind::SoftDelete,
        (FlagOp::Remove, true) => StoreKind::Undelete,
        _ => StoreKind::Update,
    }
}

pub(crate) fn store_operation(kind: StoreKind) -> Operation {
    match kind {
        StoreKind::SoftDelete => Operation::SoftDelete,
        StoreKind::Undelete | StoreKind::Update => Operation::Update,
    }
}

/// Whether a `flag_change` line's resulting flags fit what the STORE asked for, so that a
/// FETCH's implicit \Seen is not taken for a `+FLAGS (\Flagged)`. Unknown flags fit.
pub(crate) fn flags_fit(op: FlagOp, asked: &[String], logged: Option<&str>) -> bool {
    let Some(logged) = logged else { return true };
    let now: Vec<String> = logged
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split_whitespace()
        .map(str::to_ascii_lowercase)
        .collect();
    let has = |f: &String| now.contains(&f.to_ascii_lowercase());
    match op {
        FlagOp::Add => asked.iter().all(has),
        FlagOp::Remove => !asked.iter().any(has),
        FlagOp::Replace => true,
    }
}

/// The protocol a service or log prefix stands for: `imap-login` → `imap`, `sieve` →
/// `managesieve`.
pub(crate) fn protocol(service: &str) -> String {
    // Lower-cased, without a `-login` suffix (in any case); one allocation.
    let t = service.trim();
    let cut = t.len().saturating_sub(6);
    let s = match t.get(cut..) {
        Some(suffix) if suffix.eq_ignore_ascii_case("-login") => t.get(..cut).unwrap_or(t),
        _ => t,
    };
    if s.eq_ignore_ascii_case("sieve") {
        "managesieve".to_string()
    } else {
        s.to_ascii_lowercase()
    }
}

/// Services whose logins open a mailbox (and so are `MailboxLogin`s).
pub(crate) fn is_mailbox_protocol(protocol: &str) -> bool {
    matches!(protocol, "imap" | "pop3" | "managesieve")
}

/// The auth event's `transport`: `TLS` is encrypted; `insecure`, `trusted` and `secured`
/// (plaintext from localhost or `login_trusted_networks`) are not.
pub(crate) fn tls_from_transport(transport: &str) -> Option<bool> {
    match transport.to_ascii_lowercase().as_str() {
        "tls" => Some(true),
        "insecure" | "trusted" | "secured" => Some(false),
        _ => None,
    }
}

/// Who authenticated and whom they became: a master user logging in as `carol` is the
/// actor, acting as carol. Returns raw names (actor, acting_as).
fn nonempty(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

pub(crate) fn auth_identity(
    user: Option<&str>,
    original_user: Option<&str>,
    master_user: Option<&str>,
    login_user: Option<&str>,
) -> Option<(String, Option<String>)> {
    let user = nonempty(user).or(nonempty(original_user))?;
    if let Some(master) = nonempty(master_user) {
        if !master.eq_ignore_ascii_case(user) {
            return Some((master.to_string(), Some(user.to_string())));
        }
    }
    // A master login that failed: `user` is still the master, `login_user` the target.
    if let Some(target) = nonempty(login_user) {
        if !target.eq_ignore_ascii_case(user) {
            return Some((user.to_string(), Some(target.to_string())));
        }
    }
    Some((user.to_string(), None))
}

/// `tagged_reply_state`: OK → Succeeded; NO/BAD → Failed with the tagged reply as reason.
pub(crate) fn command_result(
    state: Option<&str>,
    reply: Option<&str>,
) -> (OperationResult, Option<String>) {
    match state.map(str::to_ascii_uppercase).as_deref() {
        Some("NO") | Some("BAD") => (
            OperationResult::Failed,
            Some(
                reply
                    .filter(|r| !r.is_empty())
                    .or(state)
                    .unwrap_or("failed")
                    .to_string(),
            ),
        ),
        _ => (OperationResult::Succeeded, None),
    }
}

/// ManageSieve commands that change which rules run on incoming mail.
pub(crate) fn sieve_changes_rules(cmd: &str) -> bool {
    matches!(
        cmd,
        "PUTSCRIPT" | "SETACTIVE" | "DELETESCRIPT" | "RENAMESCRIPT"
    )
}

/// The address in a From header as mail_log writes it: `Erin <erin@example.org>` →
/// `erin@example.org`.
pub(crate) fn header_address(from: &str) -> Option<String> {
    let from = from.trim();
    let addr = match (from.rfind('<'), from.rfind('>')) {
        (Some(a), Some(b)) if a < b => from.get(a + 1..b).unwrap_or_default(),
        _ => from,
    };
    let addr = addr.trim().to_lowercase();
    (!addr.is_empty()).then_some(addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::parse_store;

    fn cfg() -> DovecotConfig {
        DovecotConfig::default()
    }

    #[test]
    fn commands() {
        assert_eq!(classify_command("UID MOVE"), (CommandClass::Move, true));
        assert_eq!(
            classify_command("examine"),
            (CommandClass::FolderBind, false)
        );
        assert_eq!(classify_command("NOOP"), (CommandClass::Ignored, false));
        assert_eq!(
            classify_command("UID EXPUNGE"),
            (CommandClass::Expunge, true)
        );
    }

    #[test]
    fn shared_folders_belong_to_their_owner() {
        let c = cfg();
        assert_eq!(
            place(&c, "dan", Some("shared/carol/INBOX")),
            Some(Place {
                owner: "carol".into(),
                folder: Some("INBOX".into())
            })
        );
        assert_eq!(
            place(&c, "Carol", Some("inbox")),
            Some(Place {
                owner: "carol".into(),
                folder: Some("INBOX".into())
            })
        );
        let d = DovecotConfig {
            default_domain: Some("Example.com".into()),
            ..cfg()
        };
        assert_eq!(
            place(&d, "dan", Some("shared/carol/Projects/Zeus")),
            Some(Place {
                owner: "carol@example.com".into(),
                folder: Some("Projects/Zeus".into())
            })
        );
        assert_eq!(place(&d, "", Some("INBOX")), None);
        assert_eq!(identity(&d, "x@y.org"), Some("x@y.org".into()));
    }

    #[test]
    fn trash_and_stores() {
        let c = cfg();
        assert!(is_trash(&c, "Trash"));
        assert!(is_trash(&c, "INBOX/Deleted Items"));
        assert!(!is_trash(&c, "Archive"));
        assert_eq!(
            copy_operation(&c, true, Some("Trash")),
            Operation::MoveToDeletedItems
        );
        assert_eq!(copy_operation(&c, false, Some("Archive")), Operation::Copy);
        let s = parse_store(r"1 +FLAGS (\Deleted)").unwrap();
        assert_eq!(store_kind(&s), StoreKind::SoftDelete);
        let s = parse_store(r"1 -FLAGS (\Deleted)").unwrap();
        assert_eq!(store_kind(&s), StoreKind::Undelete);
        let s = parse_store(r"1 +FLAGS (\Flagged)").unwrap();
        assert_eq!(store_kind(&s), StoreKind::Update);
        assert!(!flags_fit(FlagOp::Add, &s.flags, Some(r"(\Seen \Recent)")));
        assert!(flags_fit(FlagOp::Add, &s.flags, Some(r"(\Flagged \Seen)")));
    }

    #[test]
    fn identities() {
        assert_eq!(
            auth_identity(
                Some("carol"),
                Some("postmaster"),
                Some("postmaster"),
                Some("")
            ),
            Some(("postmaster".into(), Some("carol".into())))
        );
        assert_eq!(
            auth_identity(Some("carol"), Some("carol"), None, None),
            Some(("carol".into(), None))
        );
        assert_eq!(
            auth_identity(Some("postmaster"), None, None, Some("carol")),
            Some(("postmaster".into(), Some("carol".into())))
        );
        assert_eq!(auth_identity(None, Some(""), None, None), None);
        assert_eq!(tls_from_transport("trusted"), Some(false));
        assert_eq!(tls_from_transport("TLS"), Some(true));
        assert_eq!(protocol("sieve"), "managesieve");
        assert_eq!(protocol("pop3-login"), "pop3");
        assert_eq!(
            header_address("Erin <Erin@Example.org>").as_deref(),
            Some("erin@example.org")
        );
        assert_eq!(
            command_result(Some("NO"), Some("NO [NONEXISTENT] Mailbox doesn't exist")),
            (
                OperationResult::Failed,
                Some("NO [NONEXISTENT] Mailbox doesn't exist".into())
            )
        );
    }
}
