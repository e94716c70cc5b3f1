//! The web console of `mailaudit serve`: server-rendered pages for signing in, searching
//! the audit log, reading one record and its proof, exporting any search, the policy
//! (admins), the non-owner access report, an account's timeline and the owners' own view.
//!
//! It reads through the server's `State` (pooled read connections) and writes only
//! through the pipeline's `WriterHandle`: every page that shows records is recorded as
//! `AuditLogSearch` or `AuditLogExport` before it is sent, and every policy change goes
//! through `change_policy`, which records it. Nothing is fetched from the network by the
//! pages; the style sheet is compiled in. No audit logic lives here.

mod alerts_page;
mod charts;
mod error;
mod html;
mod imap;
mod login;
mod mail;
mod mine;
mod policy_page;
mod report;
mod search;
mod session;
mod sessions;
mod users;

pub use error::ConsoleError;
pub use imap::{check_login, ImapError, ImapServer, Login};
pub use mail::MailConfig;
pub use session::ConsoleRole;
pub use users::{LocalRole, Users, UsersError};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use mailaudit_model::Client;
use mailaudit_pipeline::Actor;
use mailaudit_server::State;
use session::{Limiter, Session, Sessions};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How the console is set up; one field per `serve --console-*` flag.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// The data directory, which holds `console.db` (local accounts).
    pub data_dir: PathBuf,
    /// The IMAP server that checks mailbox owners' passwords; none: owners cannot sign in.
    pub imap: Option<ImapServer>,
    /// Appended to an owner's login name that has no `@` to name their mailbox.
    pub mail_domain: Option<String>,
    /// The SMTP relay for mailed exports; none: exports are downloads only.
    pub mail: Option<MailConfig>,
    /// Marks cookies `Secure` (set when serving over TLS).
    pub secure_cookies: bool,
    /// Rows per page of search results.
    pub page_size: usize,
    /// Failed sign-ins (per account, per client address) that lock further attempts.
    pub max_failures: usize,
    /// How long failures count, and so how long a lock lasts.
    pub lock_window: Duration,
}

impl ConsoleConfig {
    pub fn new(data_dir: PathBuf) -> Self {
        ConsoleConfig {
            data_dir,
            imap: None,
            mail_domain: None,
            mail: None,
            secure_cookies: false,
            page_size: 50,
            max_failures: 10,
            lock_window: Duration::from_secs(15 * 60),
        }
    }
}

/// The console's own state beside the server's.
#[derive(Clone)]
pub struct Ctx {
    pub api: State,
    inner: Arc<Inner>,
    /// The alert rules and outputs of `serve --config`, when configured.
    alerts: Option<Arc<mailaudit_outputs::Shared>>,
}

struct Inner {
    config: ConsoleConfig,
    sessions: Sessions,
    limiter: Limiter,
}

impl Ctx {
    pub fn new(api: State, config: ConsoleConfig) -> Self {
        Ctx {
            api,
            inner: Arc::new(Inner {
                limiter: Limiter::new(config.max_failures, config.lock_window),
                config,
                sessions: Sessions::new(Duration::from_secs(3600), Duration::from_secs(12 * 3600)),
            }),
            alerts: None,
        }
    }

    /// Lets admins see and edit the alert rules of `serve --config` on `/console/alerts`.
    pub fn with_alerts(mut self, alerts: Option<Arc<mailaudit_outputs::Shared>>) -> Self {
        self.alerts = alerts;
        self
    }

    fn alerts(&self) -> Option<Arc<mailaudit_outputs::Shared>> {
        self.alerts.clone()
    }

    fn config(&self) -> &ConsoleConfig {
        &self.inner.config
    }
}

const STYLE: &str = include_str!("../assets/console.css");
pub(crate) const SESSION_COOKIE: &str = "mailaudit_console";

/// The console's routes, under `/console`, to be merged into the API router.
pub fn router(ctx: Ctx) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console/") }))
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(home))
        .route("/console/static/console.css", get(style))
        .route("/console/login", get(login::form).post(login::submit))
        .route("/console/logout", post(login::logout))
        .route("/console/search", get(search::search))
        .route("/console/records/{id}", get(search::record))
        .route("/console/records/{id}/proof", get(search::proof))
        .route("/console/export", get(search::export))
        .route("/console/export/mail", post(search::mail_export))
        .route("/console/policy", get(policy_page::show))
        .route("/console/policy/mailbox", post(policy_page::post_mailbox))
        .route("/console/policy/bypass", post(policy_page::post_bypass))
        .route(
            "/console/alerts",
            get(alerts_page::show).post(alerts_page::update),
        )
        .route("/console/mine", get(mine::show))
        .route("/console/report", get(report::show))
        .route("/console/timeline", get(report::timeline))
        .route("/console/sessions", get(sessions::show))
        .route("/console/charts", get(charts::show))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(ctx)
}

async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    // Nothing but our own origin, no inline script: a record's text can never run.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        STYLE,
    )
        .into_response()
}

async fn home(user: Signed) -> Redirect {
    if user.session.role.reads_all() {
        Redirect::to("/console/search")
    } else {
        Redirect::to("/console/mine")
    }
}

/// A signed-in request: the session and who is calling from where.
pub(crate) struct Signed {
    pub session: Session,
    pub client: Client,
}

impl Signed {
    /// The accountable actor of records this request makes.
    pub fn actor(&self) -> Actor {
        Actor {
            name: format!("console:{}", self.session.name),
            client: self.client.clone(),
            source: "console".into(),
        }
    }

    pub fn require_reads_all(&self) -> Result<(), ConsoleError> {
        if self.session.role.reads_all() {
            Ok(())
        } else {
            Err(ConsoleError::Forbidden(
                "this page is for admins and auditors; owners see their own mailbox under My mailbox"
                    .into(),
            ))
        }
    }
}

pub(crate) fn client_of(parts: &Parts, secure: bool) -> Client {
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    Client {
        ip: peer.map(|p| p.ip()),
        port: peer.map(|p| p.port()),
        protocol: Some(if secure { "https" } else { "http" }.into()),
        name: parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(200).collect()),
        session: None,
        tls: Some(secure),
    }
}

impl FromRequestParts<Ctx> for Signed {
    type Rejection = ConsoleError;
    async fn from_request_parts(parts: &mut Parts, ctx: &Ctx) -> Result<Self, Self::Rejection> {
        let session = session::cookie(&parts.headers, SESSION_COOKIE)
            .and_then(|id| ctx.inner.sessions.get(id))
            .ok_or(ConsoleError::SignIn)?;
        Ok(Signed {
            session,
            client: client_of(parts, ctx.config().secure_cookies),
        })
    }
}

/// The actors with a bypass association now, for the warning banner.
pub(crate) async fn bypasses(ctx: &Ctx) -> Result<Vec<String>, ConsoleError> {
    let policy = ctx
        .api
        .read(|s| Ok(mailaudit_pipeline::load_policy(&*s)?))
        .await?;
    Ok(policy.bypass.into_iter().collect())
}

/// A finished HTML page.
pub(crate) fn html(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

/// Renders a page with the frame (navigation, bypass banner).
pub(crate) async fn render(
    ctx: &Ctx,
    session: Option<&Session>,
    title: &str,
    body: &str,
) -> Result<Response, ConsoleError> {
    render_with(ctx, session, title, body, None).await
}

pub(crate) async fn render_with(
    ctx: &Ctx,
    session: Option<&Session>,
    title: &str,
    body: &str,
    refresh: Option<u32>,
) -> Result<Response, ConsoleError> {
    let bypass = bypasses(ctx).await?;
    Ok(html(html::page(
        &html::Frame {
            title,
            session,
            bypass: &bypass,
            refresh,
        },
        body,
    )))
}
