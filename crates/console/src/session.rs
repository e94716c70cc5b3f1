//! Signed-in sessions, held in memory (a restart signs everyone out), their CSRF tokens,
//! and the sign-in rate limit per account and per client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a signed-in person may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleRole {
    /// Everything, including policy changes.
    Admin,
    /// Reads and exports every record; changes nothing.
    Auditor,
    /// A mailbox owner, signed in with their mail credentials: their own mailbox only.
    User { mailbox: String },
}

impl ConsoleRole {
    pub fn reads_all(&self) -> bool {
        matches!(self, ConsoleRole::Admin | ConsoleRole::Auditor)
    }

    pub fn describe(&self) -> String {
        match self {
            ConsoleRole::Admin => "admin".into(),
            ConsoleRole::Auditor => "auditor".into(),
            ConsoleRole::User { mailbox } => format!("owner of {mailbox}"),
        }
    }

    /// The one mailbox this role is limited to, if any.
    pub fn own_mailbox(&self) -> Option<&str> {
        match self {
            ConsoleRole::User { mailbox } => Some(mailbox),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Session {
    pub name: String,
    pub role: ConsoleRole,
    /// Every form of this session carries it; a post without it is refused.
    pub csrf: String,
    created: Instant,
    last_seen: Instant,
}

/// 32 random bytes as hex. Fails only when the OS has no randomness, which must not fall
/// back to anything guessable.
pub fn random_token() -> Result<String, crate::ConsoleError> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| crate::ConsoleError::Internal(format!("no randomness for a token: {e}")))?;
    Ok(hex::encode(bytes))
}

/// Compares secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    idle: Duration,
    absolute: Duration,
}

impl Sessions {
    pub fn new(idle: Duration, absolute: Duration) -> Self {
        Sessions {
            map: Mutex::new(HashMap::new()),
            idle,
            absolute,
        }
    }

    /// Starts a session; returns its cookie value.
    pub fn create(
        &self,
        name: String,
        role: ConsoleRole,
    ) -> Result<(String, Session), crate::ConsoleError> {
        let id = random_token()?;
        let now = Instant::now();
        let session = Session {
            name,
            role,
            csrf: random_token()?,
            created: now,
            last_seen: now,
        };
        let mut map = self.lock();
        map.retain(|_, s| !self.expired(s, now));
        map.insert(id.clone(), session.clone());
        Ok((id, session))
    }

    pub fn get(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let mut map = self.lock();
        let expired = map.get(id).map(|s| self.expired(s, now))?;
        if expired {
            map.remove(id);
            return None;
        }
        let s = map.get_mut(id)?;
        s.last_seen = now;
        Some(s.clone())
    }

    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    fn expired(&self, s: &Session, now: Instant) -> bool {
        now.duration_since(s.last_seen) > self.idle || now.duration_since(s.created) > self.absolute
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A poisoned map only means another request panicked mid-update; the data is
        // still a valid map.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Failed sign-ins per key (an account name, a client address). `max` failures within
/// `window` lock the key until the oldest of them is `window` old.
pub struct Limiter {
    failures: Mutex<HashMap<String, Vec<Instant>>>,
    max: usize,
    window: Duration,
}

impl Limiter {
    pub fn new(max: usize, window: Duration) -> Self {
        Limiter {
            failures: Mutex::new(HashMap::new()),
            max,
            window,
        }
    }

    pub fn account_key(name: &str) -> String {
        format!("account:{}", name.trim().to_lowercase())
    }

    pub fn ip_key(ip: IpAddr) -> String {
        format!("ip:{ip}")
    }

    /// How long the key stays locked, if it is.
    pub fn locked_for(&self, key: &str) -> Option<Duration> {
        let now = Instant::now();
        let mut map = self.lock();
        let list = map.get_mut(key)?;
        list.retain(|t| now.duration_since(*t) < self.window);
        if list.len() >= self.max {
            let oldest = list[list.len() - self.max];
            Some(self.window.saturating_sub(now.duration_since(oldest)))
        } else {
            None
        }
    }

    pub fn fail(&self, key: &str) {
        let now = Instant::now();
        let mut map = self.lock();
        if map.len() > 100_000 {
            // Bounded memory under a spray of names: forget keys with nothing recent.
            map.retain(|_, v| v.iter().any(|t| now.duration_since(*t) < self.window));
        }
        let list = map.entry(key.to_string()).or_default();
        list.push(now);
        if list.len() > self.max * 2 {
            list.drain(..list.len() - self.max);
        }
    }

    pub fn clear(&self, key: &str) {
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Instant>>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The value of one cookie from a `Cookie` header.
pub fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_failures_lock_and_nine_do_not() {
        let l = Limiter::new(10, Duration::from_secs(900));
        for _ in 0..9 {
            l.fail("account:eve");
        }
        assert_eq!(l.locked_for("account:eve"), None);
        l.fail("account:eve");
        let left = l.locked_for("account:eve").expect("locked after ten");
        assert!(left > Duration::from_secs(890) && left <= Duration::from_secs(900));
        assert_eq!(l.locked_for("account:other"), None);
        l.clear("account:eve");
        assert_eq!(l.locked_for("account:eve"), None);
    }

    #[test]
    fn failures_older_than_the_window_are_forgotten() {
        let l = Limiter::new(2, Duration::from_millis(30));
        l.fail("ip:192.0.2.1");
        l.fail("ip:192.0.2.1");
        assert!(l.locked_for("ip:192.0.2.1").is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(l.locked_for("ip:192.0.2.1"), None);
    }

    #[test]
    fn sessions_expire_when_idle() {
        let s = Sessions::new(Duration::from_millis(20), Duration::from_secs(60));
        let (id, session) = s
            .create("ann".into(), ConsoleRole::Auditor)
            .expect("randomness");
        assert_eq!(session.csrf.len(), 64);
        assert!(s.get(&id).is_some());
        std::thread::sleep(Duration::from_millis(30));
        assert!(s.get(&id).is_none());
    }

    #[test]
    fn secrets_compare_exactly() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
        assert!(!same_secret("", "a"));
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            axum::http::header::COOKIE,
            axum::http::HeaderValue::from_static("a=1; mailaudit_console=xyz; b=2"),
        );
        assert_eq!(cookie(&h, "mailaudit_console"), Some("xyz"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
