//! Records from log lines alone: sessions without command events (mail_log-only
//! deployments, POP3, doveadm) and POP3 session summaries. One record per run of same-kind
//! lines (one command); it must never invent what the lines do not say.

use super::*;

/// A POP3 session summary: retrieved and deleted messages, by UID where Dovecot said so.
pub(super) fn pop3_summary(
    sess: &mut Session,
    p: logline::Pop3Summary,
    ctx: &LineCtx,
    seqs: (u64, u64),
) {
    let mut retr: Vec<ItemSrc> = Vec::new();
    let mut del: Vec<ItemSrc> = Vec::new();
    for b in std::mem::take(&mut sess.lines) {
        match &b.entry {
            Entry::Pop3Retr(uid) => {
                if !retr.iter().any(|i| i.uid == Some(*uid)) {
                    retr.push(ItemSrc::uid(*uid));
                }
            }
            Entry::Pop3Expunged(uid) => {
                if !del.iter().any(|i| i.uid == Some(*uid)) {
                    del.push(ItemSrc::uid(*uid));
                }
            }
            Entry::MailLog(MailLogKind::Expunge, f) => {
                match del.iter_mut().find(|i| i.uid.is_some() && i.uid == f.uid) {
                    Some(existing) => *existing = ItemSrc::from(f),
                    None => del.push(ItemSrc::from(f)),
                }
            }
            _ => sess.lines.push(b),
        }
    }
    let time = clamp_line_time(ctx.time, sess.latest_event);
    let mut add = |op: Operation, mut items: Vec<ItemSrc>, count: u64, hint: &str, seq: u64| {
        let count = count.max(items.len() as u64);
        while (items.len() as u64) < count && items.len() < MAX_ITEMS {
            items.push(ItemSrc::hinted(hint));
        }
        let d = Draft {
            seq,
            time,
            start: None,
            deadline: time,
            terminal: false,
            reference: ctx.reference.to_string(),
            host: ctx.host.map(str::to_string),
            event_user: ctx.user.map(str::to_string),
            ip: None,
            port: None,
            result: OperationResult::Succeeded,
            reason: None,
            body: Body::Ready(Box::new(Ready {
                op,
                folder: Some("INBOX".to_string()),
                dest: None,
                items,
                params: vec![param("count", count.to_string())],
                actor: None,
                owner: None,
                administrative: false,
            })),
        };
        insert_draft(sess, d);
    };
    if p.retr > 0 || !retr.is_empty() {
        add(Operation::MessageBind, retr, p.retr, POP3_RETR_HINT, seqs.0);
    }
    if p.del > 0 || !del.is_empty() {
        add(Operation::HardDelete, del, p.del, POP3_DEL_HINT, seqs.1);
    }
}

/// A log line's time has whole seconds: a session-ending line is placed no earlier than the
/// session's last event, and never later than the end of its own second.
pub(super) fn clamp_line_time(line: Timestamp, latest_event: Option<Timestamp>) -> Timestamp {
    match latest_event {
        Some(e) if e > line => e.min(line.plus_micros(999_999)),
        _ => line,
    }
}

pub(super) struct Meta {
    pub(super) time: Timestamp,
    pub(super) reference: String,
    pub(super) host: Option<String>,
    pub(super) user: Option<String>,
}

pub(super) fn meta(b: &Buffered) -> Meta {
    Meta {
        time: b.time,
        reference: b.reference.clone(),
        host: b.host.clone(),
        user: b.user.clone(),
    }
}

pub(super) fn ready(op: Operation, folder: Option<String>, items: Vec<ItemSrc>) -> Ready {
    Ready {
        op,
        folder,
        dest: None,
        items,
        params: Vec::new(),
        actor: None,
        owner: None,
        administrative: false,
    }
}

pub(super) fn same_run(a: &Buffered, b: &Buffered) -> bool {
    if a.user != b.user {
        return false;
    }
    match (&a.entry, &b.entry) {
        (Entry::MailLog(ka, fa), Entry::MailLog(kb, fb)) => {
            ka == kb && fa.mailbox == fb.mailbox && fa.source == fb.source
        }
        (Entry::Pop3Retr(_), Entry::Pop3Retr(_))
        | (Entry::Pop3Expunged(_), Entry::Pop3Expunged(_)) => true,
        _ => false,
    }
}

/// Turns log lines of a session without command events into records: one per run of
/// same-kind lines on one folder (one command), a copy run followed by the expunge of the
/// same messages from the source being one move.
pub(super) fn group_lines(
    cfg: &DovecotConfig,
    sess: &Session,
    lines: Vec<Buffered>,
    ignored: &mut u64,
) -> Vec<(Meta, Ready)> {
    let lmtp = matches!(sess.protocol.as_deref(), Some("lmtp" | "lda"));
    let doveadm = sess.protocol.as_deref() == Some("doveadm");
    // POP3 has no flag commands: a flag change in a POP3 session is the \Seen that RETR
    // sets, part of the read, not a change the user made.
    let pop3 = sess.protocol.as_deref() == Some("pop3");
    let mut out: Vec<(Meta, Ready)> = Vec::new();
    let mut used = vec![false; lines.len()];
    // LMTP: a delivery's own lines (saved to, forwarded to) join its save line, whichever
    // came first.
    let mut forwards: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if lmtp {
        let saved: Vec<&String> = lines
            .iter()
            .filter_map(|b| match &b.entry {
                Entry::MailLog(MailLogKind::Save, f) => f.msgid.as_ref(),
                _ => None,
            })
            .collect();
        for (b, u) in lines.iter().zip(used.iter_mut()) {
            match &b.entry {
                Entry::Saved { msgid, .. } if saved.contains(&msgid) => *u = true,
                Entry::Forwarded { msgid, to } if saved.contains(&msgid) => {
                    forwards.entry(msgid.clone()).or_default().push(to.clone());
                    *u = true;
                }
                _ => {}
            }
        }
    }
    let mut i = 0;
    while let Some(first) = lines.get(i) {
        if used.get(i).copied().unwrap_or(true) {
            i += 1;
            continue;
        }
        // The run of same-kind lines starting here.
        let mut j = i + 1;
        while lines
            .get(j)
            .is_some_and(|b| !used.get(j).copied().unwrap_or(true) && same_run(first, b))
        {
            j += 1;
        }
        let run: Vec<&Buffered> = lines.get(i..j).unwrap_or_default().iter().collect();
        for u in used.iter_mut().take(j).skip(i) {
            *u = true;
        }
        let fields = || {
            run.iter()
                .filter_map(|b| match &b.entry {
                    Entry::MailLog(_, f) => Some(f),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        let made: Option<Ready> = match &first.entry {
            Entry::MailLog(MailLogKind::Save, _) if lmtp => {
                // One delivery per saved message; its delivery lines complete it.
                let mut made = Vec::new();
                for b in &run {
                    let Entry::MailLog(_, f) = &b.entry else {
                        continue;
                    };
                    let mut r = ready(
                        Operation::Deliver,
                        f.mailbox.clone(),
                        vec![ItemSrc::from(f)],
                    );
                    // A delivery is done to the mailbox, by the mail system: the owner is
                    // the actor (a sender is no delegate), the sender a parameter.
                    r.params.push(param(
                        "envelope_sender",
                        f.from
                            .as_deref()
                            .and_then(classify::header_address)
                            .unwrap_or_else(|| "<>".to_string()),
                    ));
                    for to in f
                        .msgid
                        .as_ref()
                        .and_then(|m| forwards.remove(m))
                        .unwrap_or_default()
                    {
                        r.params.push(param("forwarded_to", to));
                    }
                    r.owner = b.user.clone().or_else(|| sess.user.clone());
                    made.push((meta(b), r));
                }
                out.extend(made);
                None
            }
            Entry::MailLog(MailLogKind::Copy, f) => {
                let copies = fields();
                // The expunge run that follows, if it removes the same messages from the source.
                let mut k = j;
                while lines.get(k).is_some_and(|b| {
                    !used.get(k).copied().unwrap_or(true)
                        && b.user == first.user
                        && matches!(&b.entry, Entry::MailLog(MailLogKind::Expunge, e) if e.mailbox == f.source)
                }) {
                    k += 1;
                }
                let expunges: Vec<&MailLogFields> = lines
                    .get(j..k)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|b| match &b.entry {
                        Entry::MailLog(_, e) => Some(e),
                        _ => None,
                    })
                    .collect();
                let mut a: Vec<_> = copies.iter().map(|c| c.msgid.clone()).collect();
                let mut b: Vec<_> = expunges.iter().map(|e| e.msgid.clone()).collect();
                a.sort();
                b.sort();
                let is_move = !expunges.is_empty() && a == b;
                if is_move {
                    for u in used.iter_mut().take(k).skip(j) {
                        *u = true;
                    }
                }
                let dest = f.mailbox.clone();
                let user = first.user.as_deref().or(sess.user.as_deref());
                let at = |name: Option<&str>| user.and_then(|u| classify::place(cfg, u, name));
                let source_owner = at(f.source.as_deref()).map(|p| p.owner);
                // \Trash only counts in the source's own mailbox.
                let dest_folder = at(dest.as_deref())
                    .filter(|p| Some(&p.owner) == source_owner.as_ref())
                    .and_then(|p| p.folder);
                let op = classify::copy_operation(cfg, is_move, dest_folder.as_deref());
                let (items, dest_uids) =
                    pair_copies(&copies, if is_move { &expunges } else { &[] }, &[]);
                let mut r = ready(op, f.source.clone(), items);
                r.dest = dest;
                if !dest_uids.is_empty() {
                    r.params.push(param("destination_uids", dest_uids));
                }
                Some(r)
            }
            Entry::MailLog(MailLogKind::FlagChange, _) if pop3 => {
                *ignored += run.len() as u64;
                i = j;
                continue;
            }
            Entry::MailLog(kind, f) => {
                let op = match kind {
                    MailLogKind::Save => Operation::Create,
                    MailLogKind::Expunge => Operation::HardDelete,
                    MailLogKind::Delete => Operation::SoftDelete,
                    MailLogKind::Undelete | MailLogKind::FlagChange => Operation::Update,
                    MailLogKind::Autoexpunge | MailLogKind::Copy => {
                        *ignored += run.len() as u64;
                        i = j;
                        continue;
                    }
                };
                let fs = fields();
                let mut r = ready(
                    op,
                    f.mailbox.clone(),
                    fs.iter().map(|x| ItemSrc::from(*x)).collect(),
                );
                if matches!(kind, MailLogKind::Undelete | MailLogKind::FlagChange) {
                    let first_flags = f.flags.clone();
                    if let Some(fl) =
                        first_flags.filter(|fl| fs.iter().all(|x| x.flags.as_ref() == Some(fl)))
                    {
                        r.params.push(param("flags_after", fl));
                    }
                }
                Some(r)
            }
            Entry::Created(n) if !lmtp => {
                Some(ready(Operation::FolderCreate, Some(n.clone()), Vec::new()))
            }
            Entry::Deleted(n) => Some(ready(Operation::FolderDelete, Some(n.clone()), Vec::new())),
            Entry::Renamed(a, b) => {
                let mut r = ready(Operation::FolderRename, Some(a.clone()), Vec::new());
                r.dest = Some(b.clone());
                Some(r)
            }
            Entry::Pop3Retr(_) | Entry::Pop3Expunged(_) => {
                let op = if matches!(first.entry, Entry::Pop3Retr(_)) {
                    Operation::MessageBind
                } else {
                    Operation::HardDelete
                };
                let mut uids: Vec<u32> = run
                    .iter()
                    .filter_map(|b| match b.entry {
                        Entry::Pop3Retr(u) | Entry::Pop3Expunged(u) => Some(u),
                        _ => None,
                    })
                    .collect();
                uids.dedup();
                Some(ready(
                    op,
                    Some("INBOX".to_string()),
                    uids.into_iter().map(ItemSrc::uid).collect(),
                ))
            }
            Entry::Created(_) | Entry::Saved { .. } | Entry::Forwarded { .. } => {
                *ignored += run.len() as u64;
                None
            }
        };
        if let Some(mut r) = made {
            if doveadm {
                r.administrative = true;
                r.actor = Some("doveadm".to_string());
                r.owner = first.user.clone().or_else(|| sess.user.clone());
            }
            out.push((meta(first), r));
        }
        i = j;
    }
    out
}

/// Items of a copy/move: one per copied message, with its source UID when known (from the
/// source's expunge lines by Message-ID, else by position), and the new UIDs in the
/// destination.
pub(super) fn pair_copies(
    copies: &[&MailLogFields],
    expunges: &[&MailLogFields],
    source_uids: &[u32],
) -> (Vec<ItemSrc>, String) {
    let mut used = vec![false; expunges.len()];
    let mut items = Vec::new();
    let mut dest_uids = Vec::new();
    for (n, c) in copies.iter().enumerate() {
        let by_msgid = expunges.iter().enumerate().find(|(k, e)| {
            !used.get(*k).copied().unwrap_or(true) && e.msgid.is_some() && e.msgid == c.msgid
        });
        let uid = match by_msgid {
            Some((k, e)) => {
                if let Some(u) = used.get_mut(k) {
                    *u = true;
                }
                e.uid
            }
            None if expunges.len() == copies.len() => expunges.get(n).and_then(|e| e.uid),
            None if source_uids.len() == copies.len() => source_uids.get(n).copied(),
            None => None,
        };
        if let Some(u) = c.uid {
            dest_uids.push(u.to_string());
        }
        items.push(ItemSrc {
            uid,
            msgid: c.msgid.clone(),
            subject: c.subject.clone(),
            size: c.size,
            hint: None,
        });
    }
    (items, dest_uids.join(","))
}
