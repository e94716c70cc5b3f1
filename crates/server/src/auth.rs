//! Bearer tokens with a role. Only the SHA-256 of a token is stored; the token itself is
//! shown once when it is created.

use crate::error::ApiError;
use crate::state::State;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use mailaudit_model::{Client, Timestamp};
use mailaudit_pipeline::Actor;
use mailaudit_store::{Store, StoreError, TokenInfo};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything, including policy changes.
    Admin,
    /// Reads and exports every record; changes nothing (legal, compliance).
    Auditor,
    /// Posts observations only (sources).
    Ingest,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Auditor => "auditor",
            Role::Ingest => "ingest",
        }
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "auditor" => Ok(Role::Auditor),
            "ingest" => Ok(Role::Ingest),
            _ => Err(format!(
                "unknown role `{s}`; expected admin, auditor or ingest"
            )),
        }
    }
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Creates a token and returns it; it cannot be shown again.
pub fn create_token(store: &mut dyn Store, name: &str, role: Role) -> Result<String, StoreError> {
    let mut bytes = [0u8; 24];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| StoreError::Invalid(format!("no randomness for a token: {e}")))?;
    let token = format!("mat_{}", hex::encode(bytes));
    store.put_token(
        &hash(&token),
        &TokenInfo {
            name: name.to_string(),
            role: role.as_str().to_string(),
            created: Timestamp::now(),
            revoked: false,
        },
    )?;
    Ok(token)
}

/// The token from `Bearer TOKEN`, or from `Basic base64(ANY:TOKEN)`: senders that can only
/// put credentials in a URL (Dovecot's http-post exporter, `http://mailaudit:TOKEN@host/…`)
/// send Basic authentication.
fn bearer_or_basic(value: &str) -> Option<String> {
    if let Some(t) = value.strip_prefix("Bearer ") {
        return Some(t.trim().to_string());
    }
    let encoded = value.strip_prefix("Basic ")?;
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':')
        .map(|(_, password)| password.to_string())
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
    pub client: Client,
}

impl Caller {
    pub fn require(&self, allowed: &[Role]) -> Result<(), ApiError> {
        if allowed.contains(&self.role) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(self.role.as_str()))
        }
    }

    pub fn actor(&self) -> Actor {
        Actor {
            name: format!("token:{}", self.name),
            client: self.client.clone(),
            source: "api".into(),
        }
    }
}

pub async fn authenticate(
    state: &State,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<Caller, ApiError> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_or_basic)
        .filter(|t| !t.is_empty())
        .ok_or(ApiError::Unauthenticated)?;
    let token = token.as_str();
    let h = hash(token);
    let info = state.read(move |s| Ok(s.token(&h)?)).await?;
    let info = info
        .filter(|i| !i.revoked)
        .ok_or(ApiError::Unauthenticated)?;
    let role = info
        .role
        .parse()
        .map_err(|e: String| ApiError::Internal(e))?;
    let user_agent = headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(200).collect());
    Ok(Caller {
        name: info.name,
        role,
        client: Client {
            ip: Some(peer.ip()),
            port: Some(peer.port()),
            protocol: Some("http".into()),
            name: user_agent,
            session: None,
            tls: Some(false),
        },
    })
}

/// Extracts the caller; used by every handler but health.
impl axum::extract::FromRequestParts<State> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map(|c| c.0)
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        authenticate(state, &parts.headers, peer).await
    }
}
