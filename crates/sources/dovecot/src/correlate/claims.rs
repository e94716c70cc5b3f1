//! Which waiting log line or sub-event belongs to which draft, and when a draft is complete.
//! Pure functions over the correlation types; they must never panic and never let one line
//! be claimed twice (a claimed line is moved into its draft).

use super::*;

/// Inserts a draft in order and lets it claim what was waiting for it.
pub(super) fn insert_draft(sess: &mut Session, mut d: Draft) {
    for s in std::mem::take(&mut sess.subs) {
        if accepts_sub(&d, &s) {
            take_sub(&mut d, &s);
        } else {
            sess.subs.push(s);
        }
    }
    for b in std::mem::take(&mut sess.lines) {
        if accepts_line(&d, &b.entry) {
            take_line(&mut d, b.entry);
        } else {
            sess.lines.push(b);
        }
    }
    let key = order_key(&d);
    let pos = sess.drafts.partition_point(|x| order_key(x) <= key);
    sess.drafts.insert(pos, d);
}

pub(super) fn same_box(f: &MailLogFields, folder: &Option<String>) -> bool {
    match (&f.mailbox, folder) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

pub(super) fn room(set: &SeqSet, have: usize) -> bool {
    set.count().is_none_or(|c| have < c)
}

pub(super) fn uid_in(by_uid: bool, set: &SeqSet, uid: Option<u32>) -> bool {
    match (&set.members, by_uid) {
        (Some(m), true) => uid.is_some_and(|u| m.binary_search(&u).is_ok()),
        _ => true,
    }
}

pub(super) fn has_info(f: &MailLogFields) -> bool {
    f.msgid.is_some() || f.subject.is_some()
}

/// Whether a buffered/arriving log entry belongs to this draft.
pub(super) fn accepts_line(d: &Draft, entry: &Entry) -> bool {
    match (entry, &d.body) {
        (
            Entry::MailLog(MailLogKind::Copy, f),
            Body::CopyMove {
                folder,
                dest,
                set,
                copies,
                ..
            },
        ) => {
            (f.source.is_none() || f.source == *folder)
                && f.mailbox.as_deref().is_none_or(|m| m == dest)
                && room(set, copies.len())
        }
        (
            Entry::MailLog(MailLogKind::Expunge, f),
            Body::CopyMove {
                is_move: true,
                folder,
                set,
                by_uid,
                expunge_lines,
                ..
            },
        ) => same_box(f, folder) && room(set, expunge_lines.len()) && uid_in(*by_uid, set, f.uid),
        (Entry::MailLog(MailLogKind::Expunge, f), Body::Expunge { folder, set, .. }) => {
            same_box(f, folder) && set.as_ref().is_none_or(|s| uid_in(true, s, f.uid))
        }
        (
            Entry::MailLog(kind, f),
            Body::Store {
                folder,
                kind: store,
                op,
                flags,
                set,
                by_uid,
                lines,
                ..
            },
        ) => {
            let fits = match (kind, store) {
                (MailLogKind::Delete, StoreKind::SoftDelete) => true,
                (MailLogKind::Undelete, StoreKind::Undelete) => true,
                (MailLogKind::Undelete, _) => *op == FlagOp::Replace,
                (MailLogKind::FlagChange, StoreKind::Update) => {
                    classify::flags_fit(*op, flags, f.flags.as_deref())
                }
                _ => false,
            };
            fits && same_box(f, folder) && room(set, lines.len()) && uid_in(*by_uid, set, f.uid)
        }
        (Entry::MailLog(MailLogKind::FlagChange, f), Body::Fetch { folder, uids, .. }) => {
            // The implicit \Seen of a body fetch.
            same_box(f, folder)
                && f.uid.is_some_and(|u| uids.contains(&u))
                && f.flags
                    .as_deref()
                    .is_none_or(|fl| fl.to_ascii_lowercase().contains("\\seen"))
        }
        (Entry::MailLog(MailLogKind::Save, f), Body::Append { folder, .. }) => same_box(f, folder),
        (
            Entry::MailLog(MailLogKind::Save, f),
            Body::Deliver {
                message_id, uid, ..
            },
        ) => {
            uid.is_none()
                && match (message_id, &f.msgid) {
                    (Some(a), Some(b)) => a == b,
                    (None, _) => true,
                    _ => false,
                }
        }
        (
            Entry::Saved { msgid, .. },
            Body::Deliver {
                message_id, saved, ..
            },
        ) => !saved && message_id.as_ref().is_none_or(|m| m == msgid),
        (Entry::Forwarded { msgid, .. }, Body::Deliver { message_id, .. }) => {
            message_id.as_ref().is_none_or(|m| m == msgid)
        }
        (
            Entry::Created(n),
            Body::Simple {
                op: Operation::FolderCreate,
                folder,
                ..
            },
        )
        | (
            Entry::Deleted(n),
            Body::Simple {
                op: Operation::FolderDelete,
                folder,
                ..
            },
        ) => folder.as_ref() == Some(n),
        (
            Entry::Renamed(a, b),
            Body::Simple {
                op: Operation::FolderRename,
                folder,
                dest,
                ..
            },
        ) => folder.as_ref() == Some(a) && dest.as_ref() == Some(b),
        _ => false,
    }
}

pub(super) fn take_line(d: &mut Draft, entry: Entry) {
    match (entry, &mut d.body) {
        (Entry::MailLog(MailLogKind::Copy, f), Body::CopyMove { copies, .. }) => copies.push(f),
        (Entry::MailLog(MailLogKind::Expunge, f), Body::CopyMove { expunge_lines, .. }) => {
            expunge_lines.push(f);
        }
        (Entry::MailLog(_, f), Body::Expunge { lines, .. } | Body::Store { lines, .. }) => {
            lines.push(f);
        }
        (Entry::MailLog(MailLogKind::Save, f), Body::Append { lines, .. }) => lines.push(f),
        (
            Entry::MailLog(MailLogKind::Save, f),
            Body::Deliver {
                folder,
                message_id,
                subject,
                size,
                uid,
                ..
            },
        ) => {
            *uid = f.uid;
            if f.mailbox.is_some() {
                *folder = f.mailbox;
            }
            if message_id.is_none() {
                *message_id = f.msgid;
            }
            if subject.is_none() {
                *subject = f.subject;
            }
            if size.is_none() {
                *size = f.size;
            }
        }
        (Entry::Saved { folder: f, .. }, Body::Deliver { folder, saved, .. }) => {
            *folder = Some(f);
            *saved = true;
        }
        (Entry::Forwarded { to, .. }, Body::Deliver { forwarded, .. }) => forwarded.push(to),
        // Claimed only so that it is not reported again (a fetch's \Seen, a folder line).
        _ => {}
    }
}

pub(super) fn accepts_sub(d: &Draft, s: &Sub) -> bool {
    let within = |t: Timestamp| d.start.is_none_or(|st| st <= t) && t <= d.time;
    let time_ok = within(s.end) || s.start.is_some_and(within);
    let cmd_ok = |cmd: &str| s.cmd_name.as_deref().is_none_or(|c| c == cmd);
    let box_ok = |folder: &Option<String>| match (&s.mailbox, folder) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    };
    match &d.body {
        Body::Fetch { cmd, folder, .. } if s.opened => time_ok && cmd_ok(cmd) && box_ok(folder),
        Body::Expunge { cmd, folder, .. } if !s.opened => time_ok && cmd_ok(cmd) && box_ok(folder),
        Body::CopyMove {
            cmd,
            is_move: true,
            folder,
            ..
        } if !s.opened => time_ok && cmd_ok(cmd) && box_ok(folder),
        _ => false,
    }
}

pub(super) fn take_sub(d: &mut Draft, s: &Sub) {
    let list = match &mut d.body {
        Body::Fetch { uids, .. } | Body::Expunge { uids, .. } => uids,
        Body::CopyMove { expunged, .. } => expunged,
        _ => return,
    };
    if !list.contains(&s.uid) {
        list.push(s.uid);
    }
}

/// Remembers message identities from a `mail_log` line; follows renames and deletions.
pub(super) fn learn(cfg: &DovecotConfig, cache: &mut MsgCache, user: &str, entry: &Entry) {
    match entry {
        Entry::MailLog(_, f) => {
            let (Some(uid), Some(mb), true) = (f.uid, f.mailbox.as_deref(), has_info(f)) else {
                return;
            };
            let Some(Place {
                owner,
                folder: Some(folder),
            }) = classify::place(cfg, user, Some(mb))
            else {
                return;
            };
            cache.put(
                &owner,
                &folder,
                uid,
                MsgInfo {
                    msgid: f.msgid.clone(),
                    subject: f.subject.clone(),
                    size: f.size,
                },
            );
        }
        Entry::Renamed(a, b) => {
            let pa = classify::place(cfg, user, Some(a));
            let pb = classify::place(cfg, user, Some(b));
            if let (Some(pa), Some(pb)) = (pa, pb) {
                if let (true, Some(fa), Some(fb)) = (pa.owner == pb.owner, pa.folder, pb.folder) {
                    cache.rename(&pa.owner, &fa, &fb);
                }
            }
        }
        Entry::Deleted(n) => {
            if let Some(Place {
                owner,
                folder: Some(folder),
            }) = classify::place(cfg, user, Some(n))
            {
                cache.drop_folder(&owner, &folder);
            }
        }
        _ => {}
    }
}

pub(super) fn is_complete(
    cfg: &DovecotConfig,
    sess: &Session,
    d: &Draft,
    cache: &MsgCache,
) -> bool {
    match &d.body {
        Body::Login { from_event, .. } => *from_event,
        // The exporter does not keep a session's events in order (the sample's STORE comes
        // after its LOGOUT): a logout waits its window so that nothing follows it.
        Body::Logout { .. } => false,
        Body::Simple { .. } | Body::Ready(_) => true,
        Body::Fetch {
            folder, set, uids, ..
        } => {
            set.count() == Some(uids.len())
                && uids.iter().all(|u| {
                    let target = d.event_user.as_deref().or(sess.user.as_deref());
                    target
                        .and_then(|t| classify::place(cfg, t, folder.as_deref()))
                        .and_then(|p| cache.get(&p.owner, p.folder.as_deref()?, *u).cloned())
                        .is_some_and(|i| i.msgid.is_some() || i.subject.is_some())
                })
        }
        Body::Store { set, lines, .. } => {
            set.count() == Some(lines.len()) && lines.iter().all(has_info)
        }
        Body::CopyMove { set, copies, .. } => {
            set.count() == Some(copies.len()) && copies.iter().all(has_info)
        }
        Body::Expunge {
            set: Some(set),
            lines,
            ..
        } => set.count() == Some(lines.len()) && lines.iter().all(has_info),
        Body::Expunge { set: None, .. } => false,
        Body::Append { lines, .. } => !lines.is_empty() && lines.iter().all(has_info),
        Body::Deliver { uid, saved, .. } => uid.is_some() && *saved,
    }
}
