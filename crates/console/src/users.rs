//! Local console accounts (admins and auditors) in `console.db` in the data directory, a
//! file of the console's own beside the audit store: accounts are not audit records and
//! must not change the store's schema. Passwords are kept only as argon2id PHC strings.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("console accounts in {path}: {source}")]
    Db {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// A local account's role. Mailbox owners have no local account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalRole {
    Admin,
    Auditor,
}

impl LocalRole {
    pub fn as_str(self) -> &'static str {
        match self {
            LocalRole::Admin => "admin",
            LocalRole::Auditor => "auditor",
        }
    }
}

impl std::str::FromStr for LocalRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "admin" => Ok(LocalRole::Admin),
            "auditor" => Ok(LocalRole::Auditor),
            _ => Err(format!(
                "unknown console role `{s}`; expected admin or auditor"
            )),
        }
    }
}

pub struct Users {
    conn: Connection,
    path: PathBuf,
}

/// A PHC string of a password no one has: verifying against it when the account does not
/// exist costs the same time as a real check, so timing does not reveal account names.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$1CsRCYjKDgBYUV4nnk3sNBKpFv6JPOO3x5l3qi4z0Ro";

impl Users {
    pub fn open(data_dir: &Path) -> Result<Users, UsersError> {
        let path = data_dir.join("console.db");
        let db = |source| UsersError::Db {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(db)?;
        // Password hashes are for this process alone.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(
                |e| {
                    UsersError::Invalid(format!("restricting {} to its owner: {e}", path.display()))
                },
            )?;
        }
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS users (
                name TEXT PRIMARY KEY NOT NULL,
                role TEXT NOT NULL,
                password TEXT NOT NULL,
                created INTEGER NOT NULL
            );",
        )
        .map_err(db)?;
        Ok(Users { conn, path })
    }

    fn db(&self, source: rusqlite::Error) -> UsersError {
        UsersError::Db {
            path: self.path.clone(),
            source,
        }
    }

    /// Adds an account, or replaces the password and role of an existing one.
    pub fn set(&self, name: &str, role: LocalRole, password: &str) -> Result<(), UsersError> {
        let name = normalise(name)?;
        if password.chars().count() < 10 {
            return Err(UsersError::Invalid(
                "a console password needs at least 10 characters".into(),
            ));
        }
        let mut salt = [0u8; 16];
        getrandom::getrandom(&mut salt)
            .map_err(|e| UsersError::Invalid(format!("no randomness for a salt: {e}")))?;
        let salt = SaltString::encode_b64(&salt)
            .map_err(|e| UsersError::Invalid(format!("encoding a salt: {e}")))?;
        let hash = Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| UsersError::Invalid(format!("hashing the password: {e}")))?
            .to_string();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.conn
            .execute(
                "INSERT INTO users (name, role, password, created) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(name) DO UPDATE SET role = ?2, password = ?3",
                params![name, role.as_str(), hash, now],
            )
            .map_err(|e| self.db(e))?;
        Ok(())
    }

    pub fn remove(&self, name: &str) -> Result<bool, UsersError> {
        let name = normalise(name)?;
        let n = self
            .conn
            .execute("DELETE FROM users WHERE name = ?1", params![name])
            .map_err(|e| self.db(e))?;
        Ok(n > 0)
    }

    pub fn list(&self) -> Result<Vec<(String, LocalRole)>, UsersError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, role FROM users ORDER BY name")
            .map_err(|e| self.db(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(|e| self.db(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (name, role) = row.map_err(|e| self.db(e))?;
            let role = role.parse().map_err(UsersError::Invalid)?;
            out.push((name, role));
        }
        Ok(out)
    }

    /// `Some(role)` when the account exists and the password is its own; `None` for an
    /// unknown account or a wrong password. Slow on purpose (argon2): call it off the
    /// async threads.
    pub fn check(&self, name: &str, password: &str) -> Result<Option<LocalRole>, UsersError> {
        let Ok(name) = normalise(name) else {
            return Ok(None);
        };
        let row: Option<(String, String)> = self
            .conn
            .query_row(
                "SELECT role, password FROM users WHERE name = ?1",
                params![name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.db(e))?;
        let (role, stored) = match &row {
            Some((role, hash)) => (Some(role.as_str()), hash.as_str()),
            None => (None, DUMMY_HASH),
        };
        let parsed = PasswordHash::new(stored)
            .map_err(|e| UsersError::Invalid(format!("stored hash of `{name}`: {e}")))?;
        let ok = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        match (ok, role) {
            (true, Some(role)) => Ok(Some(role.parse().map_err(UsersError::Invalid)?)),
            _ => Ok(None),
        }
    }

    pub fn exists(&self, name: &str) -> Result<bool, UsersError> {
        let Ok(name) = normalise(name) else {
            return Ok(false);
        };
        self.conn
            .query_row("SELECT 1 FROM users WHERE name = ?1", params![name], |_| {
                Ok(())
            })
            .optional()
            .map(|r| r.is_some())
            .map_err(|e| self.db(e))
    }
}

fn normalise(name: &str) -> Result<String, UsersError> {
    let n = name.trim().to_lowercase();
    if n.is_empty() || n.len() > 200 || n.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(UsersError::Invalid(format!(
            "`{name}` is not a usable account name (no spaces or control characters, 1 to 200 bytes)"
        )));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_checked_and_stored_hashed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let users = Users::open(dir.path()).expect("open");
        users
            .set("Ann", LocalRole::Auditor, "correct horse battery")
            .expect("set");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("console.db"))
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(
            users.check("ann", "correct horse battery").expect("check"),
            Some(LocalRole::Auditor)
        );
        assert_eq!(users.check("ann", "wrong password!").expect("check"), None);
        assert_eq!(
            users
                .check("nobody", "correct horse battery")
                .expect("check"),
            None
        );
        let raw = std::fs::read(dir.path().join("console.db")).expect("read db");
        let needle = b"correct horse battery";
        assert!(
            !raw.windows(needle.len()).any(|w| w == needle),
            "the password must not be stored"
        );
        users
            .set("ann", LocalRole::Admin, "another long one")
            .expect("replace");
        assert_eq!(
            users.list().expect("list"),
            vec![("ann".into(), LocalRole::Admin)]
        );
        assert!(users.remove("ann").expect("remove"));
        assert!(!users.exists("ann").expect("exists"));
    }

    #[test]
    fn short_passwords_and_odd_names_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let users = Users::open(dir.path()).expect("open");
        assert!(users.set("ann", LocalRole::Admin, "short").is_err());
        assert!(users
            .set("a b", LocalRole::Admin, "long enough password")
            .is_err());
    }

    #[test]
    fn the_dummy_hash_parses() {
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }
}
