//! Search filters from URL query parameters. A list filter may repeat (`mailbox=a&mailbox=b`)
//! or use commas. An unknown parameter is an error rather than silently ignored, since a
//! typo would otherwise widen a search.

use crate::error::ApiError;
use mailaudit_model::{LogonType, Operation, OperationResult, Timestamp};
use mailaudit_store::{PageRequest, Query};

fn list<T>(
    value: &str,
    name: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, ApiError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| parse(v).map_err(|e| ApiError::BadRequest(format!("parameter `{name}`: {e}"))))
        .collect()
}

fn parse_named<T: std::str::FromStr<Err = mailaudit_model::ParseEnumError>>(
    v: &str,
) -> Result<T, String> {
    v.parse()
        .map_err(|e: mailaudit_model::ParseEnumError| e.to_string())
}

/// Parses filters and paging. `extra` names further parameters the caller handles itself.
pub fn parse_query_pairs(
    pairs: &[(String, String)],
    extra: &[&str],
    max_page: usize,
) -> Result<(Query, PageRequest), ApiError> {
    let mut q = Query::default();
    let mut page = PageRequest::default();
    for (name, value) in pairs {
        let time = |v: &str| {
            v.parse::<Timestamp>()
                .map_err(|e| ApiError::BadRequest(format!("parameter `{name}`: {e}")))
        };
        let text = |v: &str| Ok::<_, String>(v.to_string());
        match name.as_str() {
            "from" => q.from = Some(time(value)?),
            "to" => q.to = Some(time(value)?),
            "mailbox" => q.mailboxes.extend(list(value, name, text)?),
            "actor" => q.actors.extend(list(value, name, text)?),
            "operation" => q.operations.extend(list(value, name, parse_named::<Operation>)?),
            "logon_type" => q.logon_types.extend(list(value, name, parse_named::<LogonType>)?),
            "result" => q.results.extend(list(value, name, parse_named::<OperationResult>)?),
            "non_owner" => {
                q.non_owner = Some(
                    value
                        .parse()
                        .map_err(|e: String| ApiError::BadRequest(format!("parameter `{name}`: {e}")))?,
                )
            }
            "ip" => q
                .ips
                .extend(list(value, name, |v| v.parse::<mailaudit_store::IpFilter>())?),
            "protocol" => q.protocols.extend(list(value, name, text)?),
            "folder" => q.folders.push(value.clone()),
            "text" => q.text = Some(value.clone()).filter(|t| !t.is_empty()),
            "limit" => {
                let n: usize = value.parse().map_err(|_| {
                    ApiError::BadRequest(format!("parameter `limit`: `{value}` is not a number"))
                })?;
                if n == 0 || n > max_page {
                    return Err(ApiError::BadRequest(format!(
                        "parameter `limit`: must be 1 to {max_page} (follow next_cursor for more)"
                    )));
                }
                page.limit = n;
            }
            "cursor" => page.cursor = Some(value.clone()),
            other if extra.contains(&other) => {}
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown parameter `{other}`; filters are from, to, mailbox, actor, operation, logon_type, non_owner, result, ip, protocol, folder, text, limit, cursor"
                )))
            }
        }
    }
    Ok((q, page))
}

pub fn pairs(raw: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}
