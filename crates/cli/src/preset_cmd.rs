//! `policy preset NAME [--mailbox M]` and `policy presets`: verbosity levels as MailEnable
//! and Exchange 2007 offer them, applied as one recorded policy change (`AuditPolicyChange`
//! with before and after).

use crate::datadir::local_actor;
use anyhow::Result;
use clap::Args;
use mailaudit_model::LogonType;
use mailaudit_pipeline::Auditor;
use mailaudit_policy::{PolicyChange, Preset};
use mailaudit_store::Store;

#[derive(Args, Debug)]
pub struct PresetArgs {
    /// minimal, cross-mailbox, standard or full.
    pub name: String,
    /// One mailbox; the organisation defaults without it.
    #[arg(long)]
    pub mailbox: Option<String>,
}

fn list(p: Preset, logon: LogonType) -> String {
    let names: Vec<&str> = p.actions(logon).iter().map(|o| o.as_str()).collect();
    if names.is_empty() {
        "(nothing)".into()
    } else {
        names.join(", ")
    }
}

pub fn describe(p: Preset) -> String {
    format!(
        "{} — {}\n  AuditAdmin    : {}\n  AuditDelegate : {}\n  AuditOwner    : {}\n",
        p.name(),
        p.description(),
        list(p, LogonType::Admin),
        list(p, LogonType::Delegate),
        list(p, LogonType::Owner)
    )
}

pub fn presets() -> Result<i32> {
    for p in Preset::ALL {
        println!("{}", describe(p));
    }
    println!("Operations of the audit system itself (AuditPolicyChange, AuditBypassChange, AuditLogSearch, AuditLogExport) are recorded under every preset.");
    Ok(0)
}

pub fn preset<S: Store>(auditor: &mut Auditor<S>, args: PresetArgs) -> Result<i32> {
    let p = Preset::parse(&args.name).map_err(anyhow::Error::msg)?;
    let change = PolicyChange::ActionSets {
        mailbox: args.mailbox.clone(),
        preset: Some(p.name().to_string()),
        owner: p.actions(LogonType::Owner),
        delegate: p.actions(LogonType::Delegate),
        admin: p.actions(LogonType::Admin),
    };
    let (record, policy) = auditor.change_policy(&local_actor(), &change)?;
    eprintln!("recorded as {} {}", record.operation, record.seq);
    print!("{}", describe(p));
    let bypassed = args
        .mailbox
        .as_deref()
        .is_some_and(|m| policy.is_bypassed(m));
    print!(
        "\n{}",
        crate::policy_cmd::show(&policy.effective(args.mailbox.as_deref()), bypassed)
    );
    Ok(0)
}
