//! Reads a command's first line on its own: tag, name, and the arguments a record needs.
//! Used before the whole command has arrived (to decide whether to hold it) and for commands
//! the codec does not know (SETACL, DELETEACL, extensions), so that they are still recorded as
//! far as they are understood.

/// Which command a line is, as far as the audit is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Login,
    Authenticate,
    Select,
    Examine,
    Fetch,
    Store,
    Copy,
    Move,
    Expunge,
    Close,
    Unselect,
    Append,
    Create,
    Delete,
    Rename,
    SetAcl,
    DeleteAcl,
    Search,
    Logout,
    Idle,
    Compress,
    StartTls,
    Other,
}

/// A command's first line, tokenised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub tag: String,
    /// Upper-cased, `UID FETCH` for UID commands.
    pub name: String,
    pub kind: Kind,
    pub uid: bool,
    /// The rest of the line after the name (no CRLF).
    pub args: Option<String>,
    pub folder: Option<String>,
    pub dest: Option<String>,
    pub set: Option<String>,
    pub body_fetch: bool,
    pub login_user: Option<String>,
    pub mechanism: Option<String>,
    pub acl_identifier: Option<String>,
    pub acl_rights: Option<String>,
}

impl Head {
    /// Whether the command produces a record (and so is held until its intent is durable).
    pub fn recordable(&self) -> bool {
        match self.kind {
            Kind::Fetch => self.body_fetch,
            Kind::Idle | Kind::Compress | Kind::StartTls | Kind::Other | Kind::Unselect => false,
            _ => true,
        }
    }
}

/// Tokenises the first line of a client message; none when it is not `tag SP name`.
pub fn head(line: &[u8]) -> Option<Head> {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches(['\r', '\n']);
    let (tag, rest) = text.split_once(' ')?;
    if tag.is_empty() || tag == "*" || tag == "+" || tag.contains(['(', ')', '{', '"', '%']) {
        return None;
    }
    let (name, rest) = split_word(rest);
    let mut name = name.to_ascii_uppercase();
    if name.is_empty() {
        return None;
    }
    let mut args = rest;
    let uid = name == "UID";
    if uid {
        let (sub, r) = split_word(rest);
        name = format!("UID {}", sub.to_ascii_uppercase());
        args = r;
    }
    let kind = match name.trim_start_matches("UID ") {
        "LOGIN" => Kind::Login,
        "AUTHENTICATE" => Kind::Authenticate,
        "SELECT" => Kind::Select,
        "EXAMINE" => Kind::Examine,
        "FETCH" => Kind::Fetch,
        "STORE" => Kind::Store,
        "COPY" => Kind::Copy,
        "MOVE" => Kind::Move,
        "EXPUNGE" => Kind::Expunge,
        "CLOSE" => Kind::Close,
        "UNSELECT" => Kind::Unselect,
        "APPEND" => Kind::Append,
        "CREATE" => Kind::Create,
        "DELETE" => Kind::Delete,
        "RENAME" => Kind::Rename,
        "SETACL" => Kind::SetAcl,
        "DELETEACL" => Kind::DeleteAcl,
        "SEARCH" | "SORT" | "THREAD" | "ESEARCH" => Kind::Search,
        "LOGOUT" => Kind::Logout,
        "IDLE" => Kind::Idle,
        "COMPRESS" => Kind::Compress,
        "STARTTLS" => Kind::StartTls,
        _ => Kind::Other,
    };
    let toks = tokens(args);
    let arg = |i: usize| toks.get(i).cloned().flatten();
    let mut h = Head {
        tag: tag.to_string(),
        name,
        kind,
        uid,
        args: (!args.trim().is_empty()).then(|| args.trim().to_string()),
        folder: None,
        dest: None,
        set: None,
        body_fetch: false,
        login_user: None,
        mechanism: None,
        acl_identifier: None,
        acl_rights: None,
    };
    match kind {
        Kind::Login => h.login_user = arg(0),
        Kind::Authenticate => h.mechanism = arg(0).map(|m| m.to_ascii_uppercase()),
        Kind::Select | Kind::Examine | Kind::Create | Kind::Delete | Kind::Append => {
            h.folder = arg(0)
        }
        Kind::Rename => {
            h.folder = arg(0);
            h.dest = arg(1);
        }
        Kind::SetAcl | Kind::DeleteAcl => {
            h.folder = arg(0);
            h.acl_identifier = arg(1);
            h.acl_rights = arg(2);
        }
        Kind::Fetch => {
            h.set = arg(0);
            h.body_fetch = names_a_body(args);
        }
        Kind::Store => h.set = arg(0),
        Kind::Copy | Kind::Move => {
            h.set = arg(0);
            h.dest = arg(1);
        }
        Kind::Expunge if uid => h.set = arg(0),
        _ => {}
    }
    Some(h)
}

fn split_word(s: &str) -> (&str, &str) {
    match s.split_once(' ') {
        Some((w, r)) => (w, r),
        None => (s, ""),
    }
}

/// Whether FETCH items read a message body: BODY[...]/BODY.PEEK[...] other than header
/// sections, RFC822, RFC822.TEXT, BINARY[...], and the macros never.
fn names_a_body(args: &str) -> bool {
    let up = args.to_ascii_uppercase();
    let mut i = 0;
    while let Some(pos) = up[i..].find(['B', 'R']) {
        let at = i + pos;
        let rest = &up[at..];
        let section = if let Some(r) = rest.strip_prefix("BODY.PEEK[") {
            Some(r)
        } else if let Some(r) = rest.strip_prefix("BODY[") {
            Some(r)
        } else if let Some(r) = rest.strip_prefix("BINARY.PEEK[") {
            Some(r)
        } else {
            rest.strip_prefix("BINARY[")
        };
        if let Some(sec) = section {
            let sec = sec.split(']').next().unwrap_or("");
            let last = sec.rsplit('.').next().unwrap_or("");
            let header = sec.contains("HEADER") || last == "MIME";
            if !header {
                return true;
            }
        } else if rest.starts_with("RFC822")
            && !rest.starts_with("RFC822.SIZE")
            && !rest.starts_with("RFC822.HEADER")
        {
            return true;
        }
        i = at + 1;
    }
    false
}

/// Arguments: atoms and quoted strings as text; literals and lists as none / their text.
fn tokens(s: &str) -> Vec<Option<String>> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b' ' => i += 1,
            b'"' => {
                let mut v = Vec::new();
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        i += 1;
                    }
                    v.push(b[i]);
                    i += 1;
                }
                i += 1;
                out.push(Some(String::from_utf8_lossy(&v).into_owned()));
            }
            b'{' | b'~' => {
                // A literal: its text is not on this line.
                out.push(None);
                break;
            }
            b'(' | b'[' => {
                let (open, close) = if b[i] == b'(' {
                    (b'(', b')')
                } else {
                    (b'[', b']')
                };
                let start = i;
                let mut depth = 0;
                while i < b.len() {
                    if b[i] == open {
                        depth += 1;
                    } else if b[i] == close {
                        depth -= 1;
                        if depth == 0 {
                            i += 1;
                            break;
                        }
                    }
                    i += 1;
                }
                out.push(Some(
                    String::from_utf8_lossy(&b[start..i.min(b.len())]).into_owned(),
                ));
            }
            _ => {
                let start = i;
                while i < b.len() && b[i] != b' ' {
                    i += 1;
                }
                out.push(Some(String::from_utf8_lossy(&b[start..i]).into_owned()));
            }
        }
    }
    out
}

/// A message for a log line: printable ASCII, at most `max` bytes.
pub fn printable(bytes: &[u8], max: usize) -> String {
    bytes
        .iter()
        .take(max)
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '.'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads() {
        let h = head(b"a1 UID MOVE 1:3 \"Deleted Items\"\r\n").unwrap();
        assert_eq!(
            (h.kind, h.uid, h.name.as_str()),
            (Kind::Move, true, "UID MOVE")
        );
        assert_eq!(h.set.as_deref(), Some("1:3"));
        assert_eq!(h.dest.as_deref(), Some("Deleted Items"));
        let h = head(b"x SETACL INBOX bob lr\r\n").unwrap();
        assert_eq!(h.acl_identifier.as_deref(), Some("bob"));
        assert_eq!(h.acl_rights.as_deref(), Some("lr"));
        assert!(head(b"* OK hi\r\n").is_none());
        assert!(head(b"\r\n").is_none());
    }

    #[test]
    fn body_fetches() {
        for (args, body) in [
            ("1 (BODY.PEEK[])", true),
            ("1 (BODY[TEXT])", true),
            ("1 (RFC822)", true),
            ("1 (RFC822.SIZE FLAGS)", false),
            ("1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])", false),
            ("1 (BODY[1.MIME])", false),
            ("1 (BINARY[1])", true),
            ("1 ALL", false),
            ("1 (UID FLAGS BODYSTRUCTURE)", false),
        ] {
            assert_eq!(names_a_body(args), body, "{args}");
        }
    }
}
