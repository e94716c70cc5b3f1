//! Signing in and out. Local accounts (admins, auditors) are checked against `console.db`;
//! any other name is a mailbox owner, checked with an IMAP LOGIN against the mail server.
//! The sign-in form carries its own CSRF token (double-submitted in a cookie, since there
//! is no session yet); ten failures per account or per address lock further attempts.

use crate::html::{csrf_field, esc};
use crate::imap::{check_login, Login};
use crate::session::{cookie, random_token, same_secret, ConsoleRole, Limiter};
use crate::users::{LocalRole, Users};
use crate::{client_of, html, ConsoleError, Ctx, Signed, SESSION_COOKIE};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use mailaudit_model::Client;
use std::collections::HashMap;

const LOGIN_COOKIE: &str = "mailaudit_login";

/// Who is calling, for requests without a session.
pub(crate) struct Caller(pub Client);

impl FromRequestParts<Ctx> for Caller {
    type Rejection = ConsoleError;
    async fn from_request_parts(parts: &mut Parts, ctx: &Ctx) -> Result<Self, Self::Rejection> {
        Ok(Caller(client_of(parts, ctx.config().secure_cookies)))
    }
}

fn cookie_attrs(ctx: &Ctx) -> &'static str {
    if ctx.config().secure_cookies {
        "Path=/; HttpOnly; SameSite=Strict; Secure"
    } else {
        "Path=/; HttpOnly; SameSite=Strict"
    }
}

fn login_page(ctx: &Ctx, status: StatusCode, message: Option<&str>, name: &str) -> Response {
    let token = match random_token() {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let mut body = String::new();
    if let Some(m) = message {
        body.push_str(&format!("<p class=\"error\" role=\"alert\">{}</p>", esc(m)));
    }
    let owners = if ctx.config().imap.is_some() {
        "<p class=\"hint\">Mailbox owners: sign in with your mail address and mail password to see who accessed your mailbox.</p>"
    } else {
        ""
    };
    body.push_str(&format!(
        "<form class=\"login\" method=\"post\" action=\"/console/login\">{}\
         <label>Name <input name=\"username\" autocomplete=\"username\" required value=\"{}\"></label>\
         <label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
         <button type=\"submit\">Sign in</button></form>{owners}",
        csrf_field(&token),
        esc(name)
    ));
    let text = crate::html::page(
        &crate::html::Frame {
            title: "Sign in",
            session: None,
            bypass: &[],
            refresh: None,
        },
        &body,
    );
    let mut resp = html(text);
    *resp.status_mut() = status;
    if let Ok(v) = format!("{LOGIN_COOKIE}={token}; {}", cookie_attrs(ctx)).parse() {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

pub async fn form(State(ctx): State<Ctx>) -> Response {
    login_page(&ctx, StatusCode::OK, None, "")
}

fn field<'a>(f: &'a HashMap<String, String>, name: &str) -> &'a str {
    f.get(name).map(String::as_str).unwrap_or("")
}

/// The mailbox an owner's login name stands for.
fn owner_mailbox(ctx: &Ctx, login: &str) -> String {
    let login = login.trim().to_lowercase();
    match &ctx.config().mail_domain {
        Some(d) if !login.contains('@') => format!("{login}@{}", d.to_lowercase()),
        _ => login,
    }
}

pub async fn submit(
    State(ctx): State<Ctx>,
    Caller(client): Caller,
    headers: axum::http::HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let sent = field(&f, "csrf");
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or("");
    if sent.is_empty() || !same_secret(sent, expected) {
        return login_page(
            &ctx,
            StatusCode::FORBIDDEN,
            Some("The sign-in form was not valid (missing or stale security token); please try again."),
            "",
        );
    }
    let name = field(&f, "username").trim().to_string();
    let password = field(&f, "password").to_string();
    if name.is_empty() || password.is_empty() {
        return login_page(
            &ctx,
            StatusCode::BAD_REQUEST,
            Some("Enter a name and a password."),
            &name,
        );
    }
    let limiter = &ctx.inner.limiter;
    let account_key = Limiter::account_key(&name);
    let ip_key = client.ip.map(Limiter::ip_key);
    let locked = [Some(&account_key), ip_key.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|k| limiter.locked_for(k))
        .max();
    if let Some(left) = locked {
        let minutes = left.as_secs().div_ceil(60).max(1);
        return login_page(
            &ctx,
            StatusCode::TOO_MANY_REQUESTS,
            Some(&format!(
                "Too many failed sign-ins for this account or from this address. Try again in {minutes} minute(s)."
            )),
            &name,
        );
    }
    let role = match authenticate(&ctx, &name, &password).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let Some(role) = role else {
        limiter.fail(&account_key);
        if let Some(k) = &ip_key {
            limiter.fail(k);
        }
        tracing::info!(
            "console: failed sign-in for `{name}` from {}",
            client.ip.map(|i| i.to_string()).unwrap_or_default()
        );
        return login_page(
            &ctx,
            StatusCode::UNAUTHORIZED,
            Some("Wrong name or password."),
            &name,
        );
    };
    limiter.clear(&account_key);
    let home = if role.reads_all() {
        "/console/search"
    } else {
        "/console/mine"
    };
    let (id, _) = match ctx.inner.sessions.create(name, role) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let mut resp = (StatusCode::SEE_OTHER, [(header::LOCATION, home)]).into_response();
    for c in [
        format!("{SESSION_COOKIE}={id}; {}", cookie_attrs(&ctx)),
        format!("{LOGIN_COOKIE}=; Max-Age=0; {}", cookie_attrs(&ctx)),
    ] {
        if let Ok(v) = c.parse() {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

/// The role the credentials prove, or `None` when they prove nothing.
async fn authenticate(
    ctx: &Ctx,
    name: &str,
    password: &str,
) -> Result<Option<ConsoleRole>, ConsoleError> {
    let dir = ctx.config().data_dir.clone();
    let (n, p) = (name.to_string(), password.to_string());
    let local = tokio::task::spawn_blocking(move || {
        let users = Users::open(&dir)?;
        Ok::<_, crate::UsersError>((users.check(&n, &p)?, users.exists(&n)?))
    })
    .await
    .map_err(|e| ConsoleError::Internal(format!("sign-in task failed: {e}")))?
    .map_err(|e| ConsoleError::Unavailable(e.to_string()))?;
    match local {
        (Some(LocalRole::Admin), _) => return Ok(Some(ConsoleRole::Admin)),
        (Some(LocalRole::Auditor), _) => return Ok(Some(ConsoleRole::Auditor)),
        // A local account's name never falls through to the mail server.
        (None, true) => return Ok(None),
        (None, false) => {}
    }
    let Some(server) = &ctx.config().imap else {
        return Ok(None);
    };
    match check_login(server, name, password).await {
        Ok(Login::Accepted) => Ok(Some(ConsoleRole::User {
            mailbox: owner_mailbox(ctx, name),
        })),
        Ok(Login::Refused(_)) => Ok(None),
        Err(e) => Err(ConsoleError::Unavailable(format!(
            "the mail server could not check the password: {e}"
        ))),
    }
}

/// Checks a signed-in form's CSRF token.
pub(crate) fn check_csrf(user: &Signed, f: &HashMap<String, String>) -> Result<(), ConsoleError> {
    let sent = field(f, "csrf");
    if sent.is_empty() || !same_secret(sent, &user.session.csrf) {
        return Err(ConsoleError::Forbidden(
            "the form had no valid CSRF token; reload the page and try again".into(),
        ));
    }
    Ok(())
}

pub async fn logout(
    State(ctx): State<Ctx>,
    user: Signed,
    headers: axum::http::HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    check_csrf(&user, &f)?;
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        ctx.inner.sessions.remove(id);
    }
    let mut resp = (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, "/console/login")],
    )
        .into_response();
    if let Ok(v) = format!("{SESSION_COOKIE}=; Max-Age=0; {}", cookie_attrs(&ctx)).parse() {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(resp)
}
