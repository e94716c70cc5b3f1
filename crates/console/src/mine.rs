//! "My mailbox" for owners: sign-ins to it, every access by someone else, recent
//! deletions, and rule and permission changes. Each section is a search of the owner's own
//! mailbox, recorded like any other.

use crate::html::{esc, query_string};
use crate::search::{records_table, run_search};
use crate::{render, ConsoleError, Ctx, Signed};
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use mailaudit_model::Operation;
use mailaudit_store::{NonOwner, PageRequest, Query};
use std::fmt::Write;

static MAILBOX_OPERATIONS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    crate::search::mailbox_operations()
        .iter()
        .map(|o| o.as_str())
        .collect::<Vec<_>>()
        .join(",")
});

/// (anchor id, heading, search, the same search as URL filters)
type Section = (
    &'static str,
    &'static str,
    Query,
    Vec<(&'static str, &'static str)>,
);

pub async fn show(State(ctx): State<Ctx>, user: Signed) -> Result<Response, ConsoleError> {
    let Some(own) = user.session.role.own_mailbox().map(str::to_string) else {
        return Ok(Redirect::to("/console/search").into_response());
    };
    let base = Query {
        mailboxes: vec![own.clone()],
        ..Default::default()
    };
    use Operation::*;
    let sections: Vec<Section> = vec![
        (
            "logins",
            "Sign-ins to my mailbox",
            Query {
                operations: vec![MailboxLogin],
                ..base.clone()
            },
            vec![("operation", "MailboxLogin")],
        ),
        (
            "others",
            "Access by someone else",
            // Mailbox access, not the audit system's own records (the owner's views of
            // this page are recorded as searches on this mailbox too).
            Query {
                non_owner: Some(NonOwner::All),
                operations: crate::search::mailbox_operations(),
                ..base.clone()
            },
            vec![
                ("non_owner", "all"),
                ("operation", MAILBOX_OPERATIONS.as_str()),
            ],
        ),
        (
            "deletions",
            "Recent deletions",
            Query {
                operations: vec![MoveToDeletedItems, SoftDelete, HardDelete, FolderDelete],
                ..base.clone()
            },
            vec![(
                "operation",
                "MoveToDeletedItems,SoftDelete,HardDelete,FolderDelete",
            )],
        ),
        (
            "changes",
            "Rule and permission changes",
            Query {
                operations: vec![
                    UpdateInboxRules,
                    UpdateFolderPermissions,
                    UpdateCalendarDelegation,
                ],
                ..base.clone()
            },
            vec![(
                "operation",
                "UpdateInboxRules,UpdateFolderPermissions,UpdateCalendarDelegation",
            )],
        ),
    ];
    let mut b = String::new();
    let _ = write!(
        b,
        "<p>Activity recorded in <strong>{}</strong>. Each list shows the 20 newest; follow “all” for every one.</p>",
        esc(&own)
    );
    for (id, title, q, link) in sections {
        let page = PageRequest {
            limit: 20,
            cursor: None,
            with_total: true,
        };
        let r = run_search(&ctx, &user, &q, &page, &format!("mine:{id}")).await?;
        let total = r.total.unwrap_or(0);
        let _ = write!(
            b,
            "<section id=\"{id}\"><h2>{title} <span class=\"count\">{total}</span></h2>"
        );
        if r.records.is_empty() {
            b.push_str("<p>None recorded.</p>");
        } else {
            records_table(&mut b, &r.records, &|_| Vec::new());
            let _ = write!(
                b,
                "<p><a href=\"/console/search?{}\">All {total}</a></p>",
                esc(&query_string(link.iter().copied()))
            );
        }
        b.push_str("</section>");
    }
    render(&ctx, Some(&user.session), "My mailbox", &b).await
}
