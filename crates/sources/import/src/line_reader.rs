//! The line-oriented formats (IIS W3C, Cyrus and Zimbra logs, Microsoft 365 JSON Lines) read
//! their files the same way: one line at a time into one reused buffer, counting lines for
//! references and bytes for progress.

use crate::Parsed;
use std::io::BufRead;

pub(crate) struct LineReader<R> {
    reader: R,
    buf: Vec<u8>,
    line: u64,
    position: u64,
    done: bool,
}

impl<R: BufRead> LineReader<R> {
    pub(crate) fn new(reader: R) -> Self {
        LineReader {
            reader,
            buf: Vec::new(),
            line: 0,
            position: 0,
            done: false,
        }
    }

    /// Bytes consumed so far.
    pub(crate) fn position(&self) -> u64 {
        self.position
    }

    /// The next line without its line ending, with its place (`file:line`). A read error is
    /// a rejection naming the line it stopped at; nothing is read after it.
    pub(crate) fn next_line(&mut self, file: &str) -> Option<Result<(&[u8], String), Parsed>> {
        if self.done {
            return None;
        }
        self.buf.clear();
        match self.reader.read_until(b'\n', &mut self.buf) {
            Ok(0) => {
                self.done = true;
                None
            }
            Ok(n) => {
                self.line += 1;
                self.position += n as u64;
                let mut end = self.buf.len();
                while end > 0 && matches!(self.buf[end - 1], b'\n' | b'\r') {
                    end -= 1;
                }
                Some(Ok((&self.buf[..end], format!("{file}:{}", self.line))))
            }
            Err(e) => {
                self.done = true;
                let at = format!("{file}:{}", self.line + 1);
                Some(Err(Parsed::rejected(at, format!("cannot read: {e}"))))
            }
        }
    }
}
