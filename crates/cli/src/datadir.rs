//! The data directory: `mailaudit.db` (the store), `signing.key` (Ed25519, mode 0600),
//! `signing.pub` (the verifier key) and `origin` (the log's name in its checkpoints).

use anyhow::{bail, Context, Result};
use mailaudit_model::Client;
use mailaudit_pipeline::{Actor, Auditor};
use mailaudit_store::{sign_checkpoint, SignerKey, SqliteStore, VerifierKey};
use std::path::Path;

const KEY_FILE: &str = "signing.key";
const PUB_FILE: &str = "signing.pub";
const ORIGIN_FILE: &str = "origin";

pub struct Created {
    pub verifier: String,
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && !s.contains(char::is_whitespace))
        .unwrap_or_else(|| "localhost".into())
}

pub fn is_initialised(dir: &Path) -> bool {
    dir.join(KEY_FILE).exists()
}

/// Creates the data directory if there is none yet, saying so and printing the verifier key
/// once (`serve`, `proxy` and `milter` start on a fresh directory). True when it was created.
pub fn ensure_initialised(dir: &Path) -> Result<bool> {
    if is_initialised(dir) {
        return Ok(false);
    }
    let created = init(dir, None)?;
    eprintln!("initialised a new data directory {}", dir.display());
    eprintln!("verifier key: {}", created.verifier);
    Ok(true)
}

pub fn init(dir: &Path, name: Option<&str>) -> Result<Created> {
    if is_initialised(dir) {
        bail!(
            "{} is initialised already (it has a {KEY_FILE}); a new key would orphan its checkpoints",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut suffix = [0u8; 4];
    getrandom::getrandom(&mut suffix).context("reading randomness")?;
    let name = name.map_or_else(hostname, str::to_string);
    let origin = format!("{name}/mailaudit/{}", hex::encode(suffix));
    let key =
        SignerKey::generate(&format!("mailaudit-{name}")).context("generating the signing key")?;
    write_private(&dir.join(KEY_FILE), &key.to_string())?;
    std::fs::write(dir.join(PUB_FILE), format!("{}\n", key.verifier()))?;
    std::fs::write(dir.join(ORIGIN_FILE), format!("{origin}\n"))?;
    let mut store = SqliteStore::open(dir)?;
    sign_checkpoint(&mut store, &key, &origin)?;
    Ok(Created {
        verifier: key.verifier().to_string(),
    })
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

fn read_trimmed(path: &Path) -> Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("reading {} (run `mailaudit init` first)", path.display()))?
        .trim()
        .to_string())
}

pub fn signer(dir: &Path) -> Result<(SignerKey, String)> {
    let key = SignerKey::parse(&read_trimmed(&dir.join(KEY_FILE))?)
        .with_context(|| format!("{} is not a signing key", dir.join(KEY_FILE).display()))?;
    Ok((key, read_trimmed(&dir.join(ORIGIN_FILE))?))
}

/// A verifier key given as the key text itself or as a file holding it.
pub fn verifier(dir: &Path, given: Option<&str>) -> Result<VerifierKey> {
    let text = match given {
        Some(k) if Path::new(k).exists() => read_trimmed(Path::new(k))?,
        Some(k) => k.trim().to_string(),
        None => read_trimmed(&dir.join(PUB_FILE))?,
    };
    VerifierKey::parse(&text).with_context(|| format!("`{text}` is not a verifier key"))
}

pub fn open_store(dir: &Path) -> Result<SqliteStore> {
    if !is_initialised(dir) {
        bail!(
            "{} is not a mailaudit data directory; run `mailaudit init --data-dir {}`",
            dir.display(),
            dir.display()
        );
    }
    Ok(SqliteStore::open(dir)?)
}

pub fn open_auditor(dir: &Path) -> Result<Auditor<SqliteStore>> {
    let store = open_store(dir)?;
    let (key, origin) = signer(dir)?;
    Ok(Auditor::new(store)?.with_key(key, origin))
}

/// The person at the terminal, as the actor of what they do through the CLI.
pub fn local_actor() -> Actor {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    Actor {
        name: format!("local:{user}@{}", hostname()),
        client: Client {
            protocol: Some("cli".into()),
            name: Some(format!("mailaudit {}", env!("CARGO_PKG_VERSION"))),
            ..Default::default()
        },
        source: "cli".into(),
    }
}
