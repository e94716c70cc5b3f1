//! HTML building: one escaping function that every piece of text from a record, a user or
//! a URL goes through, and the page frame. Pages are plain strings built with `push_str`;
//! nothing here formats untrusted text without `esc`.

use crate::session::Session;
use std::fmt::Write;

/// Escapes text for element content and double-quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query string from pairs (for links that keep a search's filters).
pub fn query_string<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

pub struct Frame<'a> {
    pub title: &'a str,
    pub session: Option<&'a Session>,
    /// Actors with a bypass association; any makes a warning on every page.
    pub bypass: &'a [String],
    /// Reload the page every so many seconds (live views; works without JavaScript).
    pub refresh: Option<u32>,
}

/// The whole page around `body`.
pub fn page(frame: &Frame<'_>, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 2048);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · mailaudit</title>\
         <link rel=\"stylesheet\" href=\"/console/static/console.css\">{}</head><body>",
        esc(frame.title),
        frame
            .refresh
            .map(|s| format!("<meta http-equiv=\"refresh\" content=\"{s}\">"))
            .unwrap_or_default()
    );
    out.push_str("<header><a class=\"brand\" href=\"/console/\">mailaudit</a>");
    if let Some(s) = frame.session {
        out.push_str("<nav>");
        for (href, label, shown) in [
            ("/console/search", "Audit log search", s.role.reads_all()),
            ("/console/report", "Non-owner access", s.role.reads_all()),
            ("/console/timeline", "Account timeline", s.role.reads_all()),
            ("/console/sessions", "Live sessions", s.role.reads_all()),
            ("/console/charts", "Charts", s.role.reads_all()),
            (
                "/console/policy",
                "Policy",
                s.role == crate::ConsoleRole::Admin,
            ),
            (
                "/console/alerts",
                "Alerts",
                s.role == crate::ConsoleRole::Admin,
            ),
            ("/console/mine", "My mailbox", !s.role.reads_all()),
            ("/console/search", "My mailbox's log", !s.role.reads_all()),
        ] {
            if shown {
                let _ = write!(out, "<a href=\"{href}\">{label}</a>");
            }
        }
        let _ = write!(
            out,
            "</nav><form class=\"signout\" method=\"post\" action=\"/console/logout\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <span class=\"who\">{} ({})</span> <button type=\"submit\">Sign out</button></form>",
            esc(&s.csrf),
            esc(&s.name),
            esc(&s.role.describe())
        );
    }
    out.push_str("</header>");
    if !frame.bypass.is_empty() {
        let _ = write!(
            out,
            "<div class=\"banner bypass\" role=\"alert\"><strong>Audit bypass in force:</strong> \
             mailbox access by {} is not being recorded.</div>",
            esc(&frame.bypass.join(", "))
        );
    }
    let _ = write!(out, "<main><h1>{}</h1>", esc(frame.title));
    out.push_str(body);
    out.push_str("</main></body></html>");
    out
}

/// A hidden CSRF field for a form.
pub fn csrf_field(token: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(token)
    )
}

/// `<option>`s with the selected ones marked.
pub fn options(out: &mut String, choices: &[(&str, &str)], selected: &[String]) {
    for (value, label) in choices {
        let sel = if selected.iter().any(|s| s == value) {
            " selected"
        } else {
            ""
        };
        let _ = write!(
            out,
            "<option value=\"{}\"{sel}>{}</option>",
            esc(value),
            esc(label)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_every_markup_character() {
        assert_eq!(
            esc("<script>alert(\"x\" & 'y')</script>"),
            "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;"
        );
        assert_eq!(esc("plain Ünïcode"), "plain Ünïcode");
    }

    #[test]
    fn query_strings_are_percent_encoded() {
        assert_eq!(
            query_string([("mailbox", "a&b=c@x"), ("text", "two words")]),
            "mailbox=a%26b%3Dc%40x&text=two+words"
        );
    }
}
