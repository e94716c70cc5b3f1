//! Turns a released draft into observations: identity (master users), mailbox ownership,
//! items resolved against the message cache or marked `unresolved` with the reason, string
//! limits, splitting beyond the model's item limit. Pure; it must never panic.

use super::logonly::{clamp_line_time, pair_copies};
use super::*;

pub(super) fn set_hint(set: &str) -> String {
    format!("Dovecot's events do not say which messages the set {set} named, and no mail_log line identified them; see docs/dovecot.md")
}

pub(super) fn store_hint(set: &str, log_seen: bool) -> String {
    if log_seen {
        format!("Dovecot logged no flag change for the set {set}: no flag changed (already set, or the folder's ACL does not allow it), or mail_log_events lacks flag_change/delete/undelete; see docs/dovecot.md")
    } else {
        set_hint(set)
    }
}

/// Who acted, for commands: the master user when one logged in as the mail user.
pub(super) struct Who {
    actor: String,
    acting_as: Option<String>,
    target: String,
}

pub(super) fn who_of(cfg: &DovecotConfig, sess: &Session, event_user: Option<&str>) -> Option<Who> {
    let target = event_user.or(sess.user.as_deref())?.to_string();
    let master = sess
        .master_user
        .as_deref()
        .filter(|m| !m.eq_ignore_ascii_case(&target));
    let actor = classify::identity(cfg, master.unwrap_or(&target))?;
    let acting_as = master.and_then(|_| classify::identity(cfg, &target));
    Some(Who {
        actor,
        acting_as,
        target,
    })
}

/// The record of a draft, or none when it turned out to report nothing (an EXPUNGE that
/// removed no message).
pub(super) struct Finished {
    op: Operation,
    who: Who,
    administrative: bool,
    mailbox: String,
    folder: Option<String>,
    dest: Option<String>,
    items: Vec<Item>,
    params: Vec<Parameter>,
    tls: Option<bool>,
    time: Timestamp,
}

pub(super) use mailaudit_model::clip;

pub(super) fn clip_opt(s: Option<String>) -> Option<String> {
    s.map(|s| clip(s, MAX_FIELD))
}

/// Resolves item sources against the cache; a message still unknown says why.
pub(super) fn resolve_items(
    cache: &MsgCache,
    place: &Place,
    srcs: Vec<ItemSrc>,
    default_hint: &str,
) -> Vec<Item> {
    srcs.into_iter()
        .map(|s| {
            let mut item = Item {
                uid: s.uid,
                message_id: s.msgid,
                subject: s.subject,
                size: s.size,
                folder: None,
                unresolved: None,
            };
            if item.message_id.is_none() && item.subject.is_none() {
                if let (Some(uid), Some(folder)) = (item.uid, place.folder.as_deref()) {
                    if let Some(info) = cache.get(&place.owner, folder, uid) {
                        item.message_id.clone_from(&info.msgid);
                        item.subject.clone_from(&info.subject);
                        item.size = item.size.or(info.size);
                    }
                }
            }
            if item.message_id.is_none() && item.subject.is_none() {
                item.unresolved = Some(s.hint.unwrap_or_else(|| default_hint.to_string()));
            }
            item.message_id = clip_opt(item.message_id);
            item.subject = clip_opt(item.subject);
            item.unresolved = clip_opt(item.unresolved);
            item
        })
        .collect()
}

pub(super) fn set_items(set: &SeqSet, by_uid: bool, hint: String) -> Vec<ItemSrc> {
    match (&set.members, by_uid) {
        (Some(m), true) => m.iter().map(|u| ItemSrc::uid(*u)).collect(),
        _ => vec![ItemSrc {
            hint: Some(hint),
            ..ItemSrc::default()
        }],
    }
}

/// A destination folder as reported: its name in its owner's mailbox, and that owner when it
/// is not the record's mailbox (reported as the `destination_mailbox` parameter).
pub(super) fn dest_name(
    cfg: &DovecotConfig,
    target: &str,
    owner: &str,
    dest: Option<&str>,
) -> (Option<String>, Option<String>) {
    let Some(dest) = dest else {
        return (None, None);
    };
    match classify::place(cfg, target, Some(dest)) {
        Some(p) if p.owner == owner => (p.folder, None),
        Some(p) => (p.folder.or_else(|| Some(dest.to_string())), Some(p.owner)),
        None => (Some(dest.to_string()), None),
    }
}

/// Builds the observation(s) of a released draft. Identity and client come from the session
/// as known now, so late knowledge (a master user) still applies.
pub(super) fn build(
    cfg: &DovecotConfig,
    sess: &Session,
    d: Draft,
    cache: &MsgCache,
) -> Vec<Observation> {
    let Draft {
        time,
        reference,
        host,
        event_user,
        ip,
        port,
        result,
        reason,
        body,
        ..
    } = d;
    let ok = result == OperationResult::Succeeded;
    let finished = finish(cfg, sess, cache, body, event_user.as_deref(), time, ok);
    let Some(f) = finished else {
        return Vec::new();
    };
    let client = Client {
        ip: ip.or(sess.ip),
        port: port.or(sess.port),
        protocol: sess.protocol.clone(),
        name: clip_opt(sess.client_name.clone()),
        session: clip_opt(sess.session_id.clone()),
        tls: f.tls,
    };
    let provenance = Provenance {
        source: "dovecot".to_string(),
        host: clip_opt(host.or_else(|| sess.host.clone())),
        reference: Some(clip(reference, MAX_FIELD)),
    };
    let params: Vec<Parameter> = f
        .params
        .into_iter()
        .map(|p| Parameter {
            name: clip(p.name, MAX_FIELD),
            value: clip(p.value, 16 * MAX_FIELD),
        })
        .collect();
    let base = Observation {
        time: f.time,
        operation: f.op,
        result,
        reason: clip_opt(reason),
        mailbox: clip(f.mailbox, MAX_FIELD),
        actor: clip(f.who.actor, MAX_FIELD),
        acting_as: clip_opt(f.who.acting_as),
        administrative: f.administrative,
        folder: clip_opt(f.folder),
        destination_folder: clip_opt(f.dest),
        items: Vec::new(),
        client,
        provenance,
        parameters: params,
    };
    if f.items.len() <= MAX_ITEMS {
        return vec![Observation {
            items: f.items,
            ..base
        }];
    }
    f.items
        .chunks(MAX_ITEMS)
        .map(|chunk| Observation {
            items: chunk.to_vec(),
            ..base.clone()
        })
        .collect()
}

#[allow(clippy::too_many_lines)]
pub(super) fn finish(
    cfg: &DovecotConfig,
    sess: &Session,
    cache: &MsgCache,
    body: Body,
    event_user: Option<&str>,
    time: Timestamp,
    ok: bool,
) -> Option<Finished> {
    let mut tls = sess.tls;
    let mut time = time;
    let mut administrative = false;
    let located = |who: &Who, folder: Option<&str>| classify::place(cfg, &who.target, folder);
    let (op, who, place, dest, items, params) = match body {
        Body::Login {
            failed,
            actor,
            acting_as,
            mechanism,
            attempts,
            tls: t,
            ..
        } => {
            let actor = classify::identity(cfg, &actor)?;
            let acting_as = acting_as
                .as_deref()
                .and_then(|a| classify::identity(cfg, a));
            let mailbox = acting_as.clone().unwrap_or_else(|| actor.clone());
            tls = t.or(tls);
            let mut params = Vec::new();
            if let Some(m) = mechanism {
                params.push(param("mechanism", m));
            }
            if let Some(n) = attempts.filter(|_| failed) {
                params.push(param("attempts", n.to_string()));
            }
            let who = Who {
                actor,
                acting_as,
                target: mailbox.clone(),
            };
            let place = Place {
                owner: mailbox,
                folder: None,
            };
            (
                Operation::MailboxLogin,
                who,
                place,
                None,
                Vec::new(),
                params,
            )
        }
        Body::Logout {
            from_event,
            line_time,
            disconnect,
        } => {
            let who = who_of(cfg, sess, event_user)?;
            if let (false, Some(lt)) = (from_event, line_time) {
                time = clamp_line_time(lt, sess.latest_event);
            }
            let place = located(&who, None)?;
            let params = disconnect
                .map(|r| vec![param("disconnect", r)])
                .unwrap_or_default();
            (
                Operation::MailboxLogout,
                who,
                place,
                None,
                Vec::new(),
                params,
            )
        }
        Body::Simple {
            op,
            folder,
            dest,
            params,
        } => {
            let who = who_of(cfg, sess, event_user)?;
            let place = located(&who, folder.as_deref())?;
            let (dest, other) = dest_name(cfg, &who.target, &place.owner, dest.as_deref());
            let mut params = params;
            if let Some(owner) = other {
                params.push(param("destination_mailbox", owner));
            }
            (op, who, place, dest, Vec::new(), params)
        }
        Body::Fetch {
            folder,
            set,
            by_uid,
            uids,
            ..
        } => {
            let who = who_of(cfg, sess, event_user)?;
            let place = located(&who, folder.as_deref())?;
            let srcs = if !uids.is_empty() {
                uids.into_iter().map(ItemSrc::uid).collect()
            } else if ok {
                set_items(&set, by_uid, set_hint(&set.text))
            } else {
                Vec::new()
            };
            let items = resolve_items(cache, &place, srcs, NO_MESSAGE_ID);
            (Operation::MessageBind, who, place, None, items, Vec::new())
        }
        Body::Store {
            folder,
            kind,
            change,
            set,
            by_uid,
            lines,
            ..
        } => {
            let who = who_of(cfg, sess, event_user)?;
            let place = located(&who, folder.as_deref())?;
            let mut srcs: Vec<ItemSrc> = Vec::new();
            for l in &lines {
                if l.uid.is_none() || !srcs.iter().any(|s| s.uid == l.uid) {
                    srcs.push(ItemSrc::from(l));
                }
            }
            if srcs.is_empty() && ok {
                srcs = set_items(&set, by_uid, store_hint(&set.text, sess.log_seen));
            }
            let items = resolve_items(cache, &place, srcs, NO_MESSAGE_ID);
            let params = vec![param("flags", change)];
            (
                classify::store_operation(kind),
                who,
                place,
                None,
                items,
                params,
            )
        }
        Body::CopyMove {
            is_move,
            folder,
            dest,
            set,
            by_uid,
            copies,
            expunge_lines,
            mut expunged,
            ..
        } => {
            let who = who_of(cfg, sess, event_user)?;
            let place = located(&who, folder.as_deref())?;
            let (dest, other) = dest_name(cfg, &who.target, &place.owner, Some(&dest));
            // Into another mailbox's \Trash is still a move out of this one.
            let op =
                classify::copy_operation(cfg, is_move, dest.as_deref().filter(|_| other.is_none()));
            expunged.sort_unstable();
            let members: Vec<u32> = match (&set.members, by_uid) {
                (Some(m), true) => m.clone(),
                _ => Vec::new(),
            };
            let source_uids = if expunged.len() == copies.len() {
                expunged.clone()
            } else {
                members.clone()
            };
            let copies_ref: Vec<&MailLogFields> = copies.iter().collect();
            let exp_ref: Vec<&MailLogFields> = expunge_lines.iter().collect();
            let (mut srcs, dest_uids) = pair_copies(&copies_ref, &exp_ref, &source_uids);
            if srcs.is_empty() {
                // No copy lines: the source UIDs as far as known.
                let mut uids: Vec<u32> = expunged;
                uids.extend(expunge_lines.iter().filter_map(|e| e.uid));
                if uids.is_empty() {
                    uids = members;
                }
                uids.sort_unstable();
                uids.dedup();
                srcs = uids
                    .into_iter()
                    .map(|u| {
                        expunge_lines
                            .iter()
                            .find(|e| e.uid == Some(u))
                            .map_or_else(|| ItemSrc::uid(u), ItemSrc::from)
                    })
                    .collect();
                if srcs.is_empty() && ok {
                    srcs = set_items(&set, by_uid, set_hint(&set.text));
                }
            }
            let items = resolve_items(cache, &place, srcs, NO_MESSAGE_ID);
            let mut params = Vec::new();
            if let Some(owner) = other {
                params.push(param("destination_mailbox", owner));
            }
            if !dest_uids.is_empty() {
                params.push(param("destination_uids", dest_uids));
            }
            (op, who, place, dest, items, params)
        }
        Body::Expunge {
            folder,
            lines,
            mut uids,
            ..
        } => {
            let who = who_of(cfg, sess, event_user)?;
            let place = located(&who, folder.as_deref())?;
            uids.extend(lines.iter().filter_map(|l| l.uid));
            uids.sort_unstable();
            uids.dedup();
            let mut srcs: Vec<ItemSrc> = uids
                .into_iter()
                .map(|u| {
                    lines
                        .iter()
                        .find(|l| l.uid == Some(u))
                        .map_or_else(|| ItemSrc::uid(u), ItemSrc::from)
                })
                .collect();
            srcs.extend(lines.iter().filter(|l| l.uid.is_none()).map(ItemSrc::from));
            if srcs.is_empty() {
                // Nothing was expunged: nothing to report.
                return None;
            }
            let items = resolve_items(cache, &place, srcs, NO_MESSAGE_ID);
            (Operation::HardDelete, who, place, None, items, Vec::new())
        }
        Body::Append { folder, lines } => {
            let who = who_of(cfg, sess, event_user)?;
            let place = located(&who, folder.as_deref())?;
            let mut srcs: Vec<ItemSrc> = lines.iter().map(ItemSrc::from).collect();
            if srcs.is_empty() && ok {
                srcs.push(ItemSrc::hinted(APPEND_HINT));
            }
            let items = resolve_items(cache, &place, srcs, NO_MESSAGE_ID);
            (Operation::Create, who, place, None, items, Vec::new())
        }
        Body::Deliver {
            owner,
            sender,
            folder,
            message_id,
            subject,
            size,
            uid,
            forwarded,
            ..
        } => {
            let place = classify::place(cfg, &owner, Some(folder.as_deref().unwrap_or("INBOX")))?;
            // A delivery is done to the mailbox, by the mail system: the owner is the actor
            // (a sender is no delegate of it), the envelope sender a parameter.
            let who = Who {
                actor: place.owner.clone(),
                acting_as: None,
                target: owner,
            };
            let src = ItemSrc {
                uid,
                msgid: message_id,
                subject,
                size,
                hint: None,
            };
            let items = resolve_items(cache, &place, vec![src], DELIVER_HINT);
            let params = std::iter::once(param("envelope_sender", sender))
                .chain(forwarded.into_iter().map(|to| param("forwarded_to", to)))
                .collect();
            tls = None;
            (Operation::Deliver, who, place, None, items, params)
        }
        Body::Ready(r) => {
            let r = *r;
            let who = match r.actor {
                Some(actor) => Who {
                    actor,
                    acting_as: None,
                    target: r
                        .owner
                        .clone()
                        .or_else(|| event_user.map(str::to_string))
                        .or_else(|| sess.user.clone())?,
                },
                None => who_of(cfg, sess, r.owner.as_deref().or(event_user))?,
            };
            administrative = r.administrative;
            let place = located(&who, r.folder.as_deref())?;
            let (dest, other) = dest_name(cfg, &who.target, &place.owner, r.dest.as_deref());
            let items = resolve_items(cache, &place, r.items, NO_MESSAGE_ID);
            let mut params = r.params;
            if let Some(owner) = other {
                params.push(param("destination_mailbox", owner));
            }
            if r.op == Operation::Deliver {
                tls = None;
            }
            (r.op, who, place, dest, items, params)
        }
    };
    Some(Finished {
        op,
        who,
        administrative,
        mailbox: place.owner,
        folder: place.folder,
        dest,
        items,
        params,
        tls,
        time,
    })
}
