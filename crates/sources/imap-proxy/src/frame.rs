//! Finds message boundaries in one direction of an IMAP stream: lines, and the literals that
//! lines announce (`{N}`, `{N+}` for LITERAL+/LITERAL-, `~{N}` for BINARY). It never changes
//! the bytes that are forwarded; it builds a *compact copy* of each message for parsing, in
//! which a literal keeps at most its first `keep_literal` bytes and its announcement is
//! rewritten to the kept length, so a 20 MB APPEND or a 1 GB mailbox fetch is parsed in
//! bounded memory while the codec still sees a well-formed message.
//!
//! Why not imap-codec's `Fragmentizer`: it copies every byte of a message into its own
//! buffer (all of it, or up to a limit after which the rest of the message is dropped, UID
//! and all). A FETCH response whose body literal precedes `UID` and `ENVELOPE` would lose them.

/// Why a stream was cut off.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a line longer than {max} bytes")]
    LineTooLong { max: usize },
    #[error("a literal of {size} bytes; at most {max} are accepted")]
    LiteralTooLarge { size: u64, max: u64 },
}

/// Limits and the parsing budget of one direction.
#[derive(Debug, Clone, Copy)]
pub struct FrameLimits {
    /// Longest line accepted (without its literals).
    pub max_line: usize,
    /// Largest literal accepted.
    pub max_literal: u64,
    /// How much of each literal the compact copy keeps (headers live at the start).
    pub keep_literal: usize,
    /// Keep a literal only up to its first blank line (the end of a message header): all
    /// the audit reads of a message, and most of the parsing cost saved on large fetches.
    pub header_only: bool,
}

impl Default for FrameLimits {
    fn default() -> Self {
        FrameLimits {
            max_line: 64 * 1024,
            max_literal: 64 * 1024 * 1024,
            keep_literal: 64 * 1024,
            header_only: true,
        }
    }
}

/// What the framer found in a chunk. Offsets are into the chunk given to [`Framer::push`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameEvent {
    /// The first line of a message ended at `end` (exclusive, after its LF). `line` is that
    /// line's compact copy (with CRLF, and a literal announcement when one follows).
    Head { end: usize, line: Vec<u8> },
    /// A message ended at `end`. `copy` is its compact copy; `literal_bytes` the true total
    /// size of its literals.
    Message {
        end: usize,
        copy: Vec<u8>,
        literal_bytes: u64,
        truncated: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Inside a line; `first` when it is the first line of a message.
    Line { first: bool },
    /// Inside a literal with this many bytes still to come.
    Literal { left: u64 },
}

/// One direction's framer. Feed it every byte, in order.
#[derive(Debug, Clone)]
pub struct Framer {
    limits: FrameLimits,
    state: State,
    /// The current line so far (bounded by `max_line`).
    line: Vec<u8>,
    /// The compact copy of the current message so far.
    copy: Vec<u8>,
    literal_bytes: u64,
    truncated: bool,
    /// Kept bytes of the literal being read, and how many the copy still takes.
    keep_left: usize,
    /// Where the current literal's announcement and data start in `copy`, the length it
    /// announces there, and whether it is non-synchronising.
    announce_at: usize,
    literal_at: usize,
    announced: usize,
    plus: bool,
}

impl Framer {
    pub fn new(limits: FrameLimits) -> Self {
        Framer {
            limits,
            state: State::Line { first: true },
            line: Vec::new(),
            copy: Vec::new(),
            literal_bytes: 0,
            truncated: false,
            keep_left: 0,
            announce_at: 0,
            literal_at: 0,
            announced: 0,
            plus: false,
        }
    }

    /// True between messages: nothing of the next message has been seen.
    pub fn at_boundary(&self) -> bool {
        self.state == State::Line { first: true } && self.line.is_empty()
    }

    /// True while the first line of a message is incomplete (its bytes are being read).
    pub fn in_head(&self) -> bool {
        self.state == State::Line { first: true } && !self.line.is_empty()
    }

    /// Forgets the current message and expects a new one: after the proxy refused a command
    /// whose synchronising literal the client will therefore never send.
    pub fn skip_message(&mut self) {
        self.state = State::Line { first: true };
        self.line.clear();
        self.copy.clear();
        self.literal_bytes = 0;
        self.truncated = false;
        self.keep_left = 0;
    }

    /// Consumes `data`, appending what it found to `events`. After an error the stream is
    /// out of step and must be closed.
    pub fn push(&mut self, data: &[u8], events: &mut Vec<FrameEvent>) -> Result<(), FrameError> {
        let mut i = 0;
        while i < data.len() {
            match self.state {
                State::Literal { left } => {
                    let take = (data.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                    let keep = take.min(self.keep_left);
                    if keep > 0 {
                        let from = self.copy.len().saturating_sub(3).max(self.literal_at);
                        self.copy.extend_from_slice(&data[i..i + keep]);
                        self.keep_left -= keep;
                        if self.limits.header_only {
                            if let Some(p) = find_blank_line(&self.copy[from..]) {
                                self.copy.truncate(from + p);
                                self.keep_left = 0;
                                self.truncated = true;
                            }
                        }
                    }
                    i += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        self.reannounce();
                        State::Line { first: false }
                    } else {
                        State::Literal { left }
                    };
                }
                State::Line { first } => {
                    let rest = &data[i..];
                    let (chunk, done) = match rest.iter().position(|&b| b == b'\n') {
                        Some(p) => (&rest[..=p], true),
                        None => (rest, false),
                    };
                    if self.line.len() + chunk.len() > self.limits.max_line {
                        return Err(FrameError::LineTooLong {
                            max: self.limits.max_line,
                        });
                    }
                    self.line.extend_from_slice(chunk);
                    i += chunk.len();
                    if done {
                        self.end_line(first, i, events)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn end_line(
        &mut self,
        first: bool,
        end: usize,
        events: &mut Vec<FrameEvent>,
    ) -> Result<(), FrameError> {
        let line = std::mem::take(&mut self.line);
        let announced = literal_announcement(&line);
        match announced {
            Some((size, at, plus)) => {
                if size > self.limits.max_literal {
                    return Err(FrameError::LiteralTooLarge {
                        size,
                        max: self.limits.max_literal,
                    });
                }
                let keep = usize::try_from(size)
                    .unwrap_or(usize::MAX)
                    .min(self.limits.keep_literal);
                if (keep as u64) < size {
                    self.truncated = true;
                }
                // The copy announces what it keeps, so the codec sees a well-formed message.
                self.copy.extend_from_slice(&line[..at]);
                self.announce_at = self.copy.len();
                self.copy.extend_from_slice(
                    format!("{{{keep}{}}}\r\n", if plus { "+" } else { "" }).as_bytes(),
                );
                self.literal_at = self.copy.len();
                self.announced = keep;
                self.plus = plus;
                if first {
                    events.push(FrameEvent::Head {
                        end,
                        line: self.copy.clone(),
                    });
                }
                self.literal_bytes += size;
                self.keep_left = keep;
                self.state = if size == 0 {
                    State::Line { first: false }
                } else {
                    State::Literal { left: size }
                };
            }
            None => {
                self.copy.extend_from_slice(&line);
                if first {
                    events.push(FrameEvent::Head {
                        end,
                        line: self.copy.clone(),
                    });
                }
                events.push(FrameEvent::Message {
                    end,
                    copy: std::mem::take(&mut self.copy),
                    literal_bytes: std::mem::take(&mut self.literal_bytes),
                    truncated: std::mem::take(&mut self.truncated),
                });
                self.state = State::Line { first: true };
            }
        }
        Ok(())
    }
}

impl Framer {
    /// A literal cut at its header's end announces the length it kept.
    fn reannounce(&mut self) {
        let kept = self.copy.len().saturating_sub(self.literal_at);
        if kept == self.announced || self.literal_at > self.copy.len() {
            return;
        }
        let text = format!("{{{kept}{}}}\r\n", if self.plus { "+" } else { "" });
        self.copy
            .splice(self.announce_at..self.literal_at, text.into_bytes());
    }
}

/// The end (after the empty line) of a header block: `\r\n\r\n` or `\n\n`.
fn find_blank_line(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4);
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A line ending in `{N}`, `{N+}` or `~{N}` (then CRLF or LF): (N, where the `{` starts, `+`).
fn literal_announcement(line: &[u8]) -> Option<(u64, usize, bool)> {
    let body = line.strip_suffix(b"\n")?;
    let body = body.strip_suffix(b"\r").unwrap_or(body);
    let body = body.strip_suffix(b"}")?;
    let open = body.iter().rposition(|&b| b == b'{')?;
    let inner = &body[open + 1..];
    let (digits, plus) = match inner.strip_suffix(b"+") {
        Some(d) => (d, true),
        None => (inner, false),
    };
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let size = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some((size, open, plus))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(limits: FrameLimits, parts: &[&[u8]]) -> Vec<FrameEvent> {
        let mut f = Framer::new(limits);
        let mut ev = Vec::new();
        for p in parts {
            f.push(p, &mut ev).unwrap();
        }
        ev
    }

    #[test]
    fn lines_and_literals_split_anywhere() {
        let stream = b"a1 NOOP\r\na2 APPEND INBOX {5}\r\nhello\r\na3 LOGIN {3+}\r\nbob pw\r\n";
        for cut in 0..stream.len() {
            let ev = frames(FrameLimits::default(), &[&stream[..cut], &stream[cut..]]);
            let msgs: Vec<Vec<u8>> = ev
                .iter()
                .filter_map(|e| match e {
                    FrameEvent::Message { copy, .. } => Some(copy.clone()),
                    _ => None,
                })
                .collect();
            assert_eq!(
                msgs,
                vec![
                    b"a1 NOOP\r\n".to_vec(),
                    b"a2 APPEND INBOX {5}\r\nhello\r\n".to_vec(),
                    b"a3 LOGIN {3+}\r\nbob pw\r\n".to_vec()
                ],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn big_literals_are_kept_short_and_reannounced() {
        let limits = FrameLimits {
            keep_literal: 4,
            header_only: false,
            ..FrameLimits::default()
        };
        let ev = frames(
            limits,
            &[b"* 1 FETCH (BODY[] ~{10}\r\n0123456789 UID 7)\r\n"],
        );
        assert_eq!(
            ev.last(),
            Some(&FrameEvent::Message {
                end: 44,
                copy: b"* 1 FETCH (BODY[] ~{4}\r\n0123 UID 7)\r\n".to_vec(),
                literal_bytes: 10,
                truncated: true
            })
        );
    }

    #[test]
    fn a_message_literal_is_kept_to_the_end_of_its_header() {
        let body = b"Subject: x\r\n\r\nbody body body";
        let mut stream = format!("* 1 FETCH (BODY[] {{{}}}\r\n", body.len()).into_bytes();
        stream.extend_from_slice(body);
        stream.extend_from_slice(b" UID 3)\r\n");
        for cut in 0..stream.len() {
            let ev = frames(FrameLimits::default(), &[&stream[..cut], &stream[cut..]]);
            let Some(FrameEvent::Message {
                copy,
                literal_bytes,
                truncated,
                ..
            }) = ev.last()
            else {
                panic!("no message at cut {cut}: {ev:?}");
            };
            assert_eq!(
                (copy.as_slice(), *literal_bytes, *truncated),
                (
                    &b"* 1 FETCH (BODY[] {14}\r\nSubject: x\r\n\r\n UID 3)\r\n"[..],
                    body.len() as u64,
                    true
                ),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn limits_cut_off() {
        let limits = FrameLimits {
            max_line: 8,
            max_literal: 3,
            keep_literal: 3,
            header_only: true,
        };
        let mut f = Framer::new(limits);
        assert!(matches!(
            f.push(b"a1 NOOPNOOP\r\n", &mut Vec::new()),
            Err(FrameError::LineTooLong { max: 8 })
        ));
        let mut f = Framer::new(limits);
        assert!(matches!(
            f.push(b"a {4}\r\n", &mut Vec::new()),
            Err(FrameError::LiteralTooLarge { size: 4, max: 3 })
        ));
    }
}
