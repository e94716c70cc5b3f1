//! IMAP argument syntax as Dovecot reports it in `cmd_args`: astrings, sequence sets, STORE
//! and ID arguments, modified UTF-7 mailbox names. Pure parsing; it must never panic on any
//! text, and a set it cannot read is "unknown", never a guess.

/// One IMAP argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tok {
    Atom(String),
    /// A quoted string or a literal, unescaped.
    Str(String),
    /// A parenthesised list, as written (with its parentheses).
    List(String),
}

impl Tok {
    /// The argument as an astring value (a list gives its raw text).
    pub(crate) fn text(&self) -> &str {
        match self {
            Tok::Atom(s) | Tok::Str(s) | Tok::List(s) => s,
        }
    }
}

/// The character at byte position `i`, if `i` is inside `s` and on a boundary.
fn char_at(s: &str, i: usize) -> Option<char> {
    s.get(i..)?.chars().next()
}

/// Splits `cmd_args` into arguments. Unterminated strings and lists run to the end.
pub(crate) fn tokenize(s: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    // `i` is a byte position, always on a character boundary.
    let mut i = 0;
    while let Some(c) = char_at(s, i) {
        let pos = i;
        match c {
            ' ' | '\t' | '\r' | '\n' => i += c.len_utf8(),
            '"' => {
                let mut val = String::new();
                i += c.len_utf8();
                while let Some(ch) = char_at(s, i) {
                    i += ch.len_utf8();
                    match ch {
                        '\\' => {
                            if let Some(next) = char_at(s, i) {
                                val.push(next);
                                i += next.len_utf8();
                            }
                        }
                        '"' => break,
                        other => val.push(other),
                    }
                }
                out.push(Tok::Str(val));
            }
            '(' => {
                let mut depth = 0usize;
                let mut in_str = false;
                let mut end = s.len();
                while let Some(ch) = char_at(s, i) {
                    let p = i;
                    i += ch.len_utf8();
                    if in_str {
                        match ch {
                            '\\' => i += char_at(s, i).map_or(0, char::len_utf8),
                            '"' => in_str = false,
                            _ => {}
                        }
                        continue;
                    }
                    match ch {
                        '"' => in_str = true,
                        '(' => depth += 1,
                        ')' => {
                            depth = depth.saturating_sub(1);
                            if depth == 0 {
                                end = p + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                out.push(Tok::List(s.get(pos..end).unwrap_or_default().to_string()));
            }
            '{' => {
                // {n} or {n+}, then CRLF, then n bytes.
                let rest = s.get(pos..).unwrap_or_default();
                let close = rest.find('}');
                let n = close
                    .and_then(|c| rest.get(1..c))
                    .map(|t| t.trim_end_matches('+'))
                    .and_then(|t| t.parse::<usize>().ok());
                match (close, n) {
                    (Some(close), Some(n)) => {
                        let body_start = pos + close + 1;
                        let after = s.get(body_start..).unwrap_or_default();
                        let skip = if after.starts_with("\r\n") {
                            2
                        } else {
                            usize::from(after.starts_with('\n') || after.starts_with(' '))
                        };
                        let from = body_start + skip;
                        let to = from.saturating_add(n).min(s.len());
                        let text = s
                            .get(from..to)
                            .or_else(|| s.get(from..))
                            .unwrap_or_default();
                        out.push(Tok::Str(text.to_string()));
                        i = (from + text.len()).min(s.len());
                    }
                    _ => {
                        let (atom, next) = atom_at(s, i);
                        out.push(Tok::Atom(atom));
                        i = next;
                    }
                }
            }
            _ => {
                let (atom, next) = atom_at(s, i);
                out.push(Tok::Atom(atom));
                i = next;
            }
        }
    }
    out
}

/// An atom runs to a space outside `[...]` (so `BODY[HEADER.FIELDS (FROM)]` is one).
fn atom_at(s: &str, start: usize) -> (String, usize) {
    let mut i = start;
    let mut depth = 0usize;
    let mut end = s.len();
    while let Some(ch) = char_at(s, i) {
        match ch {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ' ' | '\t' | '\r' | '\n' if depth == 0 => {
                end = i;
                break;
            }
            _ => {}
        }
        i += ch.len_utf8();
    }
    (s.get(start..end).unwrap_or_default().to_string(), i)
}

/// Most members a set is expanded to; larger sets keep only their count.
pub(crate) const MAX_SET_MEMBERS: u64 = 100_000;

/// A message set as the client wrote it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct SeqSet {
    pub text: String,
    /// Every member, ascending, when the set has no `*`/`$` and is not huge.
    pub members: Option<Vec<u32>>,
}

impl SeqSet {
    pub(crate) fn count(&self) -> Option<usize> {
        self.members.as_ref().map(Vec::len)
    }
}

/// Parses `1,3:5`. `*`, `$` and anything unreadable leave the members unknown.
pub(crate) fn parse_set(text: &str) -> SeqSet {
    let members = (|| {
        let mut out: Vec<u32> = Vec::new();
        let mut total: u64 = 0;
        for part in text.split(',') {
            let (a, b) = match part.split_once(':') {
                Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
                None => {
                    let a = part.parse::<u32>().ok()?;
                    (a, a)
                }
            };
            let (lo, hi) = (a.min(b), a.max(b));
            if lo == 0 {
                return None;
            }
            total += u64::from(hi - lo) + 1;
            if total > MAX_SET_MEMBERS {
                return None;
            }
            out.extend(lo..=hi);
        }
        out.sort_unstable();
        out.dedup();
        (!out.is_empty()).then_some(out)
    })();
    SeqSet {
        text: text.to_string(),
        members,
    }
}

/// How a STORE changes flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum FlagOp {
    Add,
    Remove,
    Replace,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoreArgs {
    pub set: SeqSet,
    pub op: FlagOp,
    /// Flags as written, e.g. `\Deleted`.
    pub flags: Vec<String>,
    /// `+FLAGS (\Deleted)`: the change as the client asked for it.
    pub change: String,
}

/// `1 +FLAGS.SILENT (\Deleted)`, `1:3 (UNCHANGEDSINCE 5) FLAGS \Seen`.
pub(crate) fn parse_store(args: &str) -> Option<StoreArgs> {
    let toks = tokenize(args);
    let mut it = toks.iter();
    let set = parse_set(it.next()?.text());
    let mut item = it.next()?;
    if matches!(item, Tok::List(_)) {
        item = it.next()?;
    }
    let name = item.text().to_ascii_uppercase();
    let base = name.strip_suffix(".SILENT").unwrap_or(&name);
    let op = match base {
        "FLAGS" => FlagOp::Replace,
        "+FLAGS" => FlagOp::Add,
        "-FLAGS" => FlagOp::Remove,
        _ => return None,
    };
    let rest: Vec<&Tok> = it.collect();
    let mut flags = Vec::new();
    for t in &rest {
        match t {
            Tok::List(l) => flags.extend(
                l.trim_start_matches('(')
                    .trim_end_matches(')')
                    .split_whitespace()
                    .map(str::to_string),
            ),
            other => flags.push(other.text().to_string()),
        }
    }
    let flag_text = rest.iter().map(|t| t.text()).collect::<Vec<_>>().join(" ");
    let change = format!("{} {}", item.text(), flag_text).trim().to_string();
    Some(StoreArgs {
        set,
        op,
        flags,
        change,
    })
}

/// The client name from `ID ("name" "Thunderbird" "version" "128.0")`: "Thunderbird 128.0".
pub(crate) fn parse_id(args: &str) -> Option<String> {
    let toks = tokenize(args);
    let list = match toks.first()? {
        Tok::List(l) => l.trim_start_matches('(').trim_end_matches(')').to_string(),
        _ => return None,
    };
    let inner = tokenize(&list);
    let mut name = None;
    let mut version = None;
    let mut pairs = inner.chunks(2);
    for pair in pairs.by_ref() {
        if let [k, v] = pair {
            match k.text().to_ascii_lowercase().as_str() {
                "name" if !v.text().eq_ignore_ascii_case("NIL") => {
                    name = Some(v.text().to_string());
                }
                "version" if !v.text().eq_ignore_ascii_case("NIL") => {
                    version = Some(v.text().to_string());
                }
                _ => {}
            }
        }
    }
    match (name, version) {
        (Some(n), Some(v)) => Some(format!("{n} {v}")),
        (n, _) => n,
    }
}

/// Whether FETCH items read message content (used only when the event carries no
/// `reason_code`): `BODY[]`, `BODY.PEEK[TEXT]`, `RFC822`, `BINARY[1]`; not headers or sizes.
pub(crate) fn fetch_reads_body(args: &str) -> bool {
    let u = args.to_ascii_uppercase();
    for (i, _) in u.match_indices("RFC822") {
        let after = u.get(i + 6..).unwrap_or_default();
        if !(after.starts_with(".HEADER") || after.starts_with(".SIZE")) {
            return true;
        }
    }
    for pat in ["BODY[", "BODY.PEEK[", "BINARY[", "BINARY.PEEK["] {
        for (i, _) in u.match_indices(pat) {
            let section = u.get(i + pat.len()..).unwrap_or_default();
            let section = section.split(']').next().unwrap_or_default();
            let header_only = section
                .split('.')
                .any(|part| part.starts_with("HEADER") || part.starts_with("MIME"));
            if !header_only {
                return true;
            }
        }
    }
    false
}

/// Decodes an IMAP modified UTF-7 mailbox name (`Gel&APY-scht` → `Gelöscht`). Names that are
/// not valid modified UTF-7 (clients with UTF8=ACCEPT send UTF-8) are returned unchanged.
pub(crate) fn decode_mutf7(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    decode_mutf7_strict(s).unwrap_or_else(|| s.to_string())
}

fn decode_mutf7_strict(s: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(rest.get(..amp)?);
        let after = rest.get(amp + 1..)?;
        let dash = after.find('-')?;
        let b64 = after.get(..dash)?;
        if b64.is_empty() {
            out.push('&');
        } else {
            let mut bits: u32 = 0;
            let mut nbits = 0u32;
            let mut bytes = Vec::new();
            for c in b64.bytes() {
                let v = match c {
                    b'A'..=b'Z' => c - b'A',
                    b'a'..=b'z' => c - b'a' + 26,
                    b'0'..=b'9' => c - b'0' + 52,
                    b'+' => 62,
                    b',' => 63,
                    _ => return None,
                };
                bits = (bits << 6) | u32::from(v);
                nbits += 6;
                if nbits >= 8 {
                    nbits -= 8;
                    bytes.push(u8::try_from((bits >> nbits) & 0xff).ok()?);
                }
                bits &= (1 << nbits) - 1;
            }
            let units: Vec<u16> = bytes
                .chunks(2)
                .map(|c| match c {
                    [a, b] => Some(u16::from_be_bytes([*a, *b])),
                    _ => None,
                })
                .collect::<Option<_>>()?;
            out.push_str(&String::from_utf16(&units).ok()?);
        }
        rest = after.get(dash + 1..)?;
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizes_imap_arguments() {
        assert_eq!(
            tokenize(
                r#"INBOX "dan smith" (\Seen \Flagged) {3}\r\nabc x"#
                    .replace("\\r\\n", "\r\n")
                    .as_str()
            ),
            vec![
                Tok::Atom("INBOX".into()),
                Tok::Str("dan smith".into()),
                Tok::List(r"(\Seen \Flagged)".into()),
                Tok::Str("abc".into()),
                Tok::Atom("x".into()),
            ]
        );
        assert_eq!(
            tokenize("1 BODY.PEEK[HEADER.FIELDS (FROM TO)]"),
            vec![
                Tok::Atom("1".into()),
                Tok::Atom("BODY.PEEK[HEADER.FIELDS (FROM TO)]".into())
            ]
        );
        assert_eq!(
            tokenize(r#""unterminated"#),
            vec![Tok::Str("unterminated".into())]
        );
        assert_eq!(tokenize("{99}\r\nab"), vec![Tok::Str("ab".into())]);
        assert_eq!(tokenize("(a (b"), vec![Tok::List("(a (b".into())]);
    }

    #[test]
    fn sets() {
        assert_eq!(parse_set("1,3:5").members, Some(vec![1, 3, 4, 5]));
        assert_eq!(parse_set("5:3").members, Some(vec![3, 4, 5]));
        assert_eq!(parse_set("1:*").members, None);
        assert_eq!(parse_set("$").members, None);
        assert_eq!(parse_set("0").members, None);
        assert_eq!(parse_set("1:4294967295").members, None);
        assert_eq!(parse_set("").members, None);
    }

    #[test]
    fn store_arguments() {
        let s = parse_store(r"1 +FLAGS (\Deleted)").unwrap();
        assert_eq!(s.op, FlagOp::Add);
        assert_eq!(s.flags, vec![r"\Deleted".to_string()]);
        assert_eq!(s.change, r"+FLAGS (\Deleted)");
        let s = parse_store(r"1:2 (UNCHANGEDSINCE 5) -FLAGS.SILENT \Seen").unwrap();
        assert_eq!(s.op, FlagOp::Remove);
        assert_eq!(s.set.members, Some(vec![1, 2]));
        assert_eq!(s.flags, vec![r"\Seen".to_string()]);
        assert!(parse_store("1 FOO (x)").is_none());
        assert!(parse_store("").is_none());
    }

    #[test]
    fn id_and_fetch_and_mutf7() {
        assert_eq!(
            parse_id(r#"("name" "Thunderbird" "version" "128.0")"#).as_deref(),
            Some("Thunderbird 128.0")
        );
        assert_eq!(parse_id("NIL"), None);
        assert!(fetch_reads_body("1 (BODY[])"));
        assert!(fetch_reads_body("1 (RFC822)"));
        assert!(fetch_reads_body("1 BODY.PEEK[1.2]"));
        assert!(!fetch_reads_body("1:2 (ENVELOPE)"));
        assert!(!fetch_reads_body(
            "1 (BODY.PEEK[HEADER.FIELDS (FROM)] RFC822.SIZE)"
        ));
        assert_eq!(decode_mutf7("Gel&APY-schte Elemente"), "Gelöschte Elemente");
        assert_eq!(decode_mutf7("A&-B"), "A&B");
        assert_eq!(decode_mutf7("broken&AP"), "broken&AP");
        assert_eq!(decode_mutf7("&2D3eAA-"), "\u{1F600}");
    }
}
