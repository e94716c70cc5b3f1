//! A server killed with SIGKILL in the middle of ingesting loses nothing it acknowledged, and
//! the log it leaves verifies.

use crate::util::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const BATCH: usize = 20;

#[test]
fn sigkill_during_ingest_loses_no_acknowledged_observation() {
    let dir = init_dir();
    let data = dir.path();
    let admin = token(data, "admin", "crash-admin");
    let server = Server::start(data, &["--checkpoint-interval", "1"]);

    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let killing = Arc::new(AtomicBool::new(false));
    let client = {
        let url = server.url("/api/v1/observations");
        let (acked, killing, admin) = (acked.clone(), killing.clone(), admin.clone());
        std::thread::spawn(move || -> Result<usize, String> {
            let mut batches = 0usize;
            loop {
                let refs: Vec<String> =
                    (0..BATCH).map(|i| format!("crash-{batches}-{i}")).collect();
                let obs: Vec<Obs> = refs
                    .iter()
                    .map(|r| {
                        Obs::new("MessageBind", "alice@example.com", "bob@example.com")
                            .reference(r.clone())
                    })
                    .collect();
                match try_request("POST", &url, Some(&admin), Some(ndjson(&obs).as_bytes())) {
                    Ok(resp) if (200..300).contains(&resp.status) => {
                        acked.lock().unwrap().extend(refs);
                    }
                    // The connection broke: expected once the server is being killed.
                    Err(_) if killing.load(Ordering::SeqCst) => return Ok(batches),
                    Ok(resp) => return Err(format!("{}: {}", resp.status, resp.body)),
                    Err(e) => return Err(e),
                }
                batches += 1;
            }
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    killing.store(true, Ordering::SeqCst);
    server.kill();
    let batches = client
        .join()
        .expect("the client thread")
        .unwrap_or_else(|e| panic!("a request failed before the kill: {e}"));
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(
        batches > 0 && acked.len() == batches * BATCH,
        "{batches} batches acknowledged, {} observations",
        acked.len()
    );

    // Restarted on the same data directory, every acknowledged observation is there.
    let server = Server::start(data, &["--checkpoint-interval", "1"]);
    let stored: std::collections::HashSet<String> =
        search_all(data, &["--mailbox", "alice@example.com"])
            .iter()
            .filter_map(|r| r["provenance"]["reference"].str().map(String::from))
            .collect();
    let lost: Vec<_> = acked.iter().filter(|r| !stored.contains(*r)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged observations are gone after the crash, e.g. {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
    // The restarted server takes more.
    let after =
        Obs::new("MessageBind", "alice@example.com", "bob@example.com").reference("after-restart");
    let resp = post_observations(&server, &admin, &after.json());
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.json()["stored"].u64(), Some(1));
    server.kill();

    mailaudit(data, &["checkpoint"]).ok();
    let verify = mailaudit(data, &["verify"]);
    assert_eq!(verify.code, 0, "{}", verify.all());
    assert!(verify.stdout.starts_with("OK:"), "{}", verify.stdout);
}
