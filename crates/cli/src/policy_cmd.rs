//! `policy show|set` (mirroring `Get-Mailbox | fl Audit*` and `Set-Mailbox -Audit*`) and
//! `bypass add|remove|list`. Changes apply to the next observation of a running server too:
//! it re-reads the policy whenever its stored version changes.

use crate::datadir::{self, local_actor};
use anyhow::{bail, Result};
use clap::Subcommand;
use mailaudit_model::{LogonType, Operation};
use mailaudit_policy::{ActionEdit, EffectivePolicy, PolicyChange};
use std::collections::BTreeSet;
use std::path::Path;

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Shows the effective policy of a mailbox, or the organisation defaults.
    Show {
        #[arg(long)]
        mailbox: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Changes the policy of a mailbox, or the organisation defaults without --mailbox.
    ///
    /// An action list replaces the set (`MessageBind,HardDelete`), adds to it
    /// (`+MessageBind`, like @{Add=...}), removes from it (`-HardDelete`, like
    /// @{Remove=...}), or returns to the default (`default`).
    Set {
        #[arg(long)]
        mailbox: Option<String>,
        #[arg(long)]
        audit_enabled: Option<bool>,
        /// Retention in days (Exchange: AuditLogAgeLimit).
        #[arg(long)]
        audit_log_age_limit: Option<u32>,
        #[arg(long, allow_hyphen_values = true)]
        audit_owner: Option<String>,
        #[arg(long, allow_hyphen_values = true)]
        audit_delegate: Option<String>,
        #[arg(long, allow_hyphen_values = true)]
        audit_admin: Option<String>,
    },
    /// Sets all action sets to a verbosity preset (minimal, cross-mailbox, standard, full)
    /// in one recorded change; `policy presets` shows what each switches on.
    Preset(crate::preset_cmd::PresetArgs),
    /// Lists the verbosity presets and what each switches on.
    Presets,
}

#[derive(Subcommand, Debug)]
pub enum BypassCommand {
    /// Stops recording an actor's mailbox access. The change itself is always recorded.
    Add {
        actor: String,
    },
    Remove {
        actor: String,
    },
    List,
}

/// Parses an action list into one or two edits (adds, then removes).
pub fn parse_actions(spec: &str) -> Result<Vec<ActionEdit>> {
    let spec = spec.trim();
    if spec.eq_ignore_ascii_case("default") {
        return Ok(vec![ActionEdit::Default]);
    }
    let mut add = BTreeSet::new();
    let mut remove = BTreeSet::new();
    let mut replace = BTreeSet::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (set, name) = match part.as_bytes()[0] {
            b'+' => (&mut add, &part[1..]),
            b'-' => (&mut remove, &part[1..]),
            _ => (&mut replace, part),
        };
        set.insert(name.parse::<Operation>()?);
    }
    let edits_given = !add.is_empty() || !remove.is_empty();
    if !replace.is_empty() && edits_given {
        bail!("`{spec}` mixes a plain list (replace) with +/- edits; use one or the other");
    }
    let mut edits = Vec::new();
    if !replace.is_empty() || spec.is_empty() {
        edits.push(ActionEdit::Replace(replace));
    }
    if !add.is_empty() {
        edits.push(ActionEdit::Add(add));
    }
    if !remove.is_empty() {
        edits.push(ActionEdit::Remove(remove));
    }
    Ok(edits)
}

fn set_list(s: &BTreeSet<Operation>) -> String {
    let names: Vec<_> = s.iter().map(|o| o.as_str()).collect();
    format!("{{{}}}", names.join(", "))
}

pub fn show(e: &EffectivePolicy, bypassed: bool) -> String {
    let days = e.retention_days;
    let default_set: Vec<_> = e.default_audit_set.iter().map(|l| l.as_str()).collect();
    format!(
        "Identity           : {}\nAuditEnabled       : {}\nAuditLogAgeLimit   : {days}.00:00:00\nAuditAdmin         : {}\nAuditDelegate      : {}\nAuditOwner         : {}\nDefaultAuditSet    : {{{}}}\nAuditBypassEnabled : {}\n",
        e.mailbox.as_deref().unwrap_or("(organisation defaults)"),
        if e.enabled { "True" } else { "False" },
        set_list(&e.admin),
        set_list(&e.delegate),
        set_list(&e.owner),
        default_set.join(", "),
        if bypassed { "True" } else { "False" },
    )
}

pub fn policy(dir: &Path, cmd: PolicyCommand) -> Result<i32> {
    if let PolicyCommand::Presets = cmd {
        return crate::preset_cmd::presets();
    }
    let mut auditor = datadir::open_auditor(dir)?;
    match cmd {
        PolicyCommand::Preset(args) => return crate::preset_cmd::preset(&mut auditor, args),
        PolicyCommand::Presets => {}
        PolicyCommand::Show { mailbox, json } => {
            let policy = auditor.refresh_policy()?;
            let e = policy.effective(mailbox.as_deref());
            if json {
                println!("{}", serde_json::to_string_pretty(&e)?);
            } else {
                let bypassed = mailbox.as_deref().is_some_and(|m| policy.is_bypassed(m));
                print!("{}", show(&e, bypassed));
            }
        }
        PolicyCommand::Set {
            mailbox,
            audit_enabled,
            audit_log_age_limit,
            audit_owner,
            audit_delegate,
            audit_admin,
        } => {
            let mut changes = Vec::new();
            if let Some(enabled) = audit_enabled {
                changes.push(PolicyChange::Enabled {
                    mailbox: mailbox.clone(),
                    enabled,
                });
            }
            if let Some(days) = audit_log_age_limit {
                changes.push(PolicyChange::Retention {
                    mailbox: mailbox.clone(),
                    days,
                });
            }
            for (logon_type, spec) in [
                (LogonType::Owner, audit_owner),
                (LogonType::Delegate, audit_delegate),
                (LogonType::Admin, audit_admin),
            ] {
                if let Some(spec) = spec {
                    for edit in parse_actions(&spec)? {
                        changes.push(PolicyChange::Actions {
                            mailbox: mailbox.clone(),
                            logon_type,
                            edit,
                        });
                    }
                }
            }
            if changes.is_empty() {
                bail!("nothing to change: give --audit-enabled, --audit-log-age-limit, --audit-owner, --audit-delegate or --audit-admin");
            }
            let actor = local_actor();
            let mut last = None;
            for change in &changes {
                let (record, policy) = auditor.change_policy(&actor, change)?;
                eprintln!("recorded as {} {}", record.operation, record.seq);
                last = Some(policy);
            }
            if let Some(p) = last {
                let bypassed = mailbox.as_deref().is_some_and(|m| p.is_bypassed(m));
                print!("{}", show(&p.effective(mailbox.as_deref()), bypassed));
            }
        }
    }
    Ok(0)
}

pub fn bypass(dir: &Path, cmd: BypassCommand) -> Result<i32> {
    let mut auditor = datadir::open_auditor(dir)?;
    let change = match cmd {
        BypassCommand::List => {
            for actor in &auditor.refresh_policy()?.bypass {
                println!("{actor}");
            }
            return Ok(0);
        }
        BypassCommand::Add { actor } => PolicyChange::BypassAdd { actor },
        BypassCommand::Remove { actor } => PolicyChange::BypassRemove { actor },
    };
    let (record, _) = auditor.change_policy(&local_actor(), &change)?;
    println!("recorded as {} {}", record.operation, record.seq);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_lists() {
        assert_eq!(parse_actions("default").unwrap(), vec![ActionEdit::Default]);
        assert_eq!(
            parse_actions("+MessageBind,-HardDelete").unwrap(),
            vec![
                ActionEdit::Add([Operation::MessageBind].into()),
                ActionEdit::Remove([Operation::HardDelete].into())
            ]
        );
        assert_eq!(
            parse_actions("MessageBind, FolderBind").unwrap(),
            vec![ActionEdit::Replace(
                [Operation::MessageBind, Operation::FolderBind].into()
            )]
        );
        assert!(parse_actions("MessageBind,+Copy").is_err());
        assert!(parse_actions("+ReadMail").is_err());
    }
}
