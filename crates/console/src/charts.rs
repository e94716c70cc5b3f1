//! Charts where a picture reads faster than a table, drawn as SVG on the server (nothing
//! fetched, no script): activity per day by logon type, non-owner accesses per mailbox,
//! and sign-ins by network. Every figure is an exact count.

use crate::html::esc;
use crate::report::{all_records, record_view};
use crate::{render, ConsoleError, Ctx, Signed};
use axum::extract::{Query as UrlQuery, State};
use axum::response::Response;
use mailaudit_model::{LogonType, Operation, OperationResult, Timestamp};
use mailaudit_store::{NonOwner, PageRequest, Query};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::net::IpAddr;

const COLORS: [&str; 3] = ["#5b7fc7", "#d9a21b", "#c0504d"];

/// Vertical stacked bars, one per label, one segment per series.
fn stacked_columns(labels: &[String], series: &[&str], values: &[Vec<u64>]) -> String {
    let (w, h, left, bottom) = (760.0, 260.0, 50.0, 40.0);
    let max = values
        .iter()
        .map(|v| v.iter().sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let n = labels.len().max(1) as f64;
    let slot = (w - left) / n;
    let mut s = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {w} {}\" role=\"img\" aria-label=\"activity per day by logon type\">",
        h + bottom + 24.0
    );
    let _ = write!(s, "<text x=\"0\" y=\"12\" class=\"axis\">{}</text><text x=\"0\" y=\"{}\" class=\"axis\">0</text>", max as u64, h);
    for (i, (label, vals)) in labels.iter().zip(values).enumerate() {
        let x = left + i as f64 * slot + slot * 0.1;
        let mut y = h;
        for (k, v) in vals.iter().enumerate() {
            let bh = *v as f64 / max * (h - 16.0);
            y -= bh;
            let _ = write!(
                s,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"{}\"><title>{} {}: {v}</title></rect>",
                slot * 0.8,
                COLORS[k % COLORS.len()],
                esc(label),
                esc(series[k])
            );
        }
        if labels.len() <= 16 || i % 2 == 0 {
            let _ = write!(
                s,
                "<text x=\"{:.1}\" y=\"{}\" class=\"axis\" text-anchor=\"middle\">{}</text>",
                x + slot * 0.4,
                h + 14.0,
                esc(label.get(5..).unwrap_or(label))
            );
        }
    }
    for (k, name) in series.iter().enumerate() {
        let x = left + k as f64 * 130.0;
        let _ = write!(
            s,
            "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{}\" class=\"axis\">{}</text>",
            h + bottom,
            COLORS[k % COLORS.len()],
            x + 16.0,
            h + bottom + 11.0,
            esc(name)
        );
    }
    s.push_str("</svg>");
    s
}

/// Horizontal bars, longest first.
fn bars(items: &[(String, Vec<u64>)], series: &[&str], label: &str) -> String {
    let row = 22.0;
    let (w, left) = (760.0, 260.0);
    let max = items
        .iter()
        .map(|(_, v)| v.iter().sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let mut s = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {w} {}\" role=\"img\" aria-label=\"{}\">",
        items.len() as f64 * row + 30.0,
        esc(label)
    );
    for (i, (name, vals)) in items.iter().enumerate() {
        let y = i as f64 * row;
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" class=\"axis\" text-anchor=\"end\">{}</text>",
            left - 6.0,
            y + 15.0,
            esc(name)
        );
        let mut x = left;
        for (k, v) in vals.iter().enumerate() {
            let bw = *v as f64 / max * (w - left - 60.0);
            let _ = write!(
                s,
                "<rect x=\"{x:.1}\" y=\"{}\" width=\"{bw:.1}\" height=\"{}\" fill=\"{}\"><title>{} {}: {v}</title></rect>",
                y + 3.0,
                row - 6.0,
                COLORS[k % COLORS.len()],
                esc(name),
                esc(series[k])
            );
            x += bw;
        }
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" class=\"axis\">{}</text>",
            x + 4.0,
            y + 15.0,
            vals.iter().sum::<u64>()
        );
    }
    for (k, name) in series.iter().enumerate() {
        let x = left + k as f64 * 130.0;
        let y = items.len() as f64 * row + 8.0;
        let _ = write!(
            s,
            "<rect x=\"{x}\" y=\"{y}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{}\" class=\"axis\">{}</text>",
            COLORS[k % COLORS.len()],
            x + 16.0,
            y + 11.0,
            esc(name)
        );
    }
    s.push_str("</svg>");
    s
}

fn network(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

pub async fn show(
    State(ctx): State<Ctx>,
    user: Signed,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    user.require_reads_all()?;
    let days: i64 = match params
        .get("days")
        .map(|d| d.trim())
        .filter(|d| !d.is_empty())
    {
        None => 14,
        Some(d) => d
            .parse()
            .ok()
            .filter(|d| (1..=90).contains(d))
            .ok_or_else(|| ConsoleError::BadRequest(format!("`days`: `{d}` is not 1 to 90")))?,
    };
    let now = Timestamp::now();
    let today = Timestamp::from_secs(now.micros() / 1_000_000 / 86_400 * 86_400);
    let start = today.plus_secs(-(days - 1) * 86_400);
    let end = today.plus_secs(86_400);

    // Per day and logon type: exact counts, one query each.
    let per_day = ctx
        .api
        .read(move |s| {
            let mut out = Vec::new();
            for d in 0..days {
                let from = start.plus_secs(d * 86_400);
                let mut row = Vec::new();
                for t in LogonType::ALL {
                    let q = Query {
                        from: Some(from),
                        to: Some(from.plus_secs(86_400)),
                        logon_types: vec![*t],
                        ..Default::default()
                    };
                    let page = PageRequest {
                        limit: 1,
                        cursor: None,
                        with_total: true,
                    };
                    row.push(s.search(&q, &page)?.total.unwrap_or(0));
                }
                out.push((from.to_rfc3339().get(..10).unwrap_or("").to_string(), row));
            }
            Ok(out)
        })
        .await?;
    let range = Query {
        from: Some(start),
        to: Some(end),
        ..Default::default()
    };
    let non_owner = all_records(
        &ctx,
        &Query {
            non_owner: Some(NonOwner::All),
            operations: crate::search::mailbox_operations(),
            ..range.clone()
        },
    )
    .await?;
    let logins = all_records(
        &ctx,
        &Query {
            operations: vec![Operation::MailboxLogin],
            ..range.clone()
        },
    )
    .await?;
    record_view(
        &ctx,
        &user,
        &range,
        "charts",
        non_owner.len() + logins.len(),
    )
    .await?;

    let mut per_mailbox: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in &non_owner {
        let v = per_mailbox
            .entry(r.mailbox.clone())
            .or_insert_with(|| vec![0; 3]);
        let i = if r.external {
            2
        } else if r.logon_type == LogonType::Admin {
            1
        } else {
            0
        };
        v[i] += 1;
    }
    let mut per_mailbox: Vec<_> = per_mailbox.into_iter().collect();
    per_mailbox.sort_by_key(|(m, v)| (std::cmp::Reverse(v.iter().sum::<u64>()), m.clone()));
    let mailboxes_total = per_mailbox.len();
    per_mailbox.truncate(15);

    let mut per_net: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut no_ip = 0u64;
    for r in &logins {
        match r.client.ip {
            Some(ip) => {
                let v = per_net.entry(network(ip)).or_insert_with(|| vec![0; 2]);
                v[usize::from(r.result == OperationResult::Failed)] += 1;
            }
            None => no_ip += 1,
        }
    }
    let mut per_net: Vec<_> = per_net.into_iter().collect();
    per_net.sort_by_key(|(n, v)| (std::cmp::Reverse(v.iter().sum::<u64>()), n.clone()));
    let networks_total = per_net.len();
    per_net.truncate(15);

    let mut b = String::new();
    let _ = write!(
        b,
        "<form class=\"filters\" method=\"get\" action=\"/console/charts\"><label>Days <input type=\"number\" name=\"days\" min=\"1\" max=\"90\" value=\"{days}\"></label><div class=\"actions\"><button type=\"submit\">Show</button></div></form>"
    );
    let (labels, values): (Vec<String>, Vec<Vec<u64>>) = per_day.into_iter().unzip();
    let day_total: u64 = values.iter().flatten().sum();
    let _ = write!(b, "<h2>Activity per day by logon type <span class=\"count\" id=\"day-total\">{day_total}</span></h2>");
    let series: Vec<&str> = LogonType::ALL.iter().map(|t| t.readable()).collect();
    b.push_str(&stacked_columns(&labels, &series, &values));
    let _ = write!(
        b,
        "<h2>Non-owner accesses per mailbox <span class=\"count\" id=\"non-owner-total\">{}</span></h2><p class=\"hint\">The {} busiest of {mailboxes_total} mailboxes; every one is in the <a href=\"/console/report\">report</a>.</p>",
        non_owner.len(),
        per_mailbox.len()
    );
    b.push_str(&bars(
        &per_mailbox,
        &["Delegate", "Administrator", "External"],
        "non-owner accesses per mailbox",
    ));
    let _ = write!(
        b,
        "<h2>Sign-ins by network <span class=\"count\" id=\"login-total\">{}</span></h2><p class=\"hint\">The {} busiest of {networks_total} networks (/24 and /64); {no_ip} sign-ins without an address.</p>",
        logins.len(),
        per_net.len()
    );
    b.push_str(&bars(
        &per_net,
        &["Succeeded", "Failed"],
        "sign-ins by network",
    ));
    render(&ctx, Some(&user.session), "Charts", &b).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_group_addresses() {
        assert_eq!(network("192.0.2.77".parse().expect("ip")), "192.0.2.0/24");
        assert_eq!(
            network("2001:db8:1:2:3::9".parse().expect("ip")),
            "2001:db8:1:2::/64"
        );
    }

    #[test]
    fn charts_escape_labels_and_scale_to_the_largest() {
        let svg = bars(
            &[("<m>".into(), vec![10, 0]), ("b".into(), vec![5, 5])],
            &["x", "y"],
            "t",
        );
        assert!(svg.contains("&lt;m&gt;") && !svg.contains("<m>"));
        assert!(
            svg.contains("width=\"440.0\""),
            "the longest bar spans the plot: {svg}"
        );
    }
}
