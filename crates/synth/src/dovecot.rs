//! Synthetic Dovecot logs for the Dovecot source's benchmark: a real Dovecot 2.3.19 log (the
//! sample story, events exported with `transport = log` plus `mail_log` lines, captured
//! here) replayed many times with its sessions, users and Message-IDs made unique per copy.

/// The captured log: LMTP deliveries, an owner's session, a delegate's, a master user's, a
/// failed login, POP3 and ManageSieve.
pub const DOVECOT_TRANSPORT_LOG: &str =
    include_str!("../fixtures/dovecot-2.3.19-transport-log.log");

/// Session ids in the capture, found in `"session":"…"` fields, `<pid><session>` log
/// prefixes and `session=<…>` login lines.
fn session_ids(log: &str) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    let mut add = |id: &str| {
        if !id.is_empty() && !ids.iter().any(|i| i == id) {
            ids.push(id.to_string());
        }
    };
    for line in log.lines() {
        for (start, end) in [("\"session\":\"", "\""), ("session=<", ">")] {
            let mut rest = line;
            while let Some(i) = rest.find(start) {
                rest = &rest[i + start.len()..];
                if let Some(j) = rest.find(end) {
                    add(rest[..j].split(':').next().unwrap_or_default());
                }
            }
        }
    }
    // Longest first, so that no id is replaced inside a longer one.
    ids.sort_by_key(|i| std::cmp::Reverse(i.len()));
    ids
}

/// `copies` replays of the captured log; copy `k` has its own sessions, its own users
/// (`u{k}carol`, `u{k}dan`) and its own Message-IDs. The master user stays `postmaster`.
pub fn dovecot_log_lines(copies: usize) -> Vec<String> {
    let template: Vec<&str> = DOVECOT_TRANSPORT_LOG
        .lines()
        .filter(|l| !l.contains(" master: "))
        .collect();
    let ids = session_ids(DOVECOT_TRANSPORT_LOG);
    let mut out = Vec::with_capacity(template.len() * copies);
    for k in 0..copies {
        for line in &template {
            let mut l = line
                .replace("carol", &format!("u{k}carol"))
                .replace("dan", &format!("u{k}dan"))
                .replace("@example.org>", &format!(".{k}@example.org>"));
            for id in &ids {
                l = l.replace(id.as_str(), &format!("{id}{k:x}"));
            }
            out.push(l);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_distinct_sessions_of_the_same_story() {
        let ids = session_ids(DOVECOT_TRANSPORT_LOG);
        assert!(ids.len() >= 5, "{ids:?}");
        let lines = dovecot_log_lines(2);
        assert_eq!(lines.len() % 2, 0);
        let half = lines.len() / 2;
        assert!(lines[..half].iter().any(|l| l.contains("u0carol")));
        assert!(lines[half..].iter().all(|l| !l.contains("u0carol")));
        for id in &ids {
            assert!(lines[half..]
                .iter()
                .all(|l| !l.contains(&format!("{id}0\""))));
        }
    }
}
