//! The IMAP proxy source of mailaudit: `mailaudit proxy` sits in front of any IMAP server,
//! forwards every byte both ways unchanged, and parses a copy of each direction with
//! imap-codec to record what each command did to which mailbox, one `Observation` per
//! tagged completion (failures included).
//!
//! - `frame`: message boundaries (lines and literals) and bounded compact copies. No I/O.
//! - `names`: a command's first line on its own (to decide before the rest arrives). No I/O.
//! - `session`: the per-connection state machine and the observations. No I/O, no clock.
//! - `net`: the TCP/TLS proxy. It holds each recordable command until its intent is durable
//!   through an [`AuditSink`] (fail closed) and never writes to the store itself.

pub mod config;
pub mod frame;
pub mod names;
pub mod net;
pub mod session;

pub use config::ProxyConfig;
pub use frame::{FrameError, FrameEvent, FrameLimits, Framer};
pub use net::{
    AuditFailure, AuditSink, IntentId, Limits, ProxyServer, ProxyStats, TlsFiles, Upstream,
    UpstreamSecurity,
};
pub use session::{Completion, ConnInfo, HeadAction, Session, SessionStats};
