//! End-to-end tests of the `mailaudit` binary: each runs the real command and, where it needs
//! one, a real `mailaudit serve` on a temporary data directory.
//!
//! One test binary with a module per area (the ripgrep layout). It lives in
//! `tests/integration/` so that Cargo does not also build each module as a test crate of its own.

mod alerts;
mod browser;
mod console;
mod crash;
mod dovecot;
mod exports;
mod imap_proxy;
mod import;
mod import_formats;
mod ingest_errors;
mod milter;
mod policy_live;
mod presets;
mod tamper;
mod tour;
mod util;
