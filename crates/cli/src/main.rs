//! The `mailaudit` binary: parses arguments, wires the library crates together, and turns
//! their typed errors into messages for people. No audit logic lives here.

mod bench;
mod bench_alerts;
mod bench_console;
mod bench_dovecot;
mod bench_imap_proxy;
mod bench_import;
mod bench_milter;
mod console_cmd;
mod datadir;
mod dovecot;
mod filters;
mod import_cmd;
mod milter;
mod outputs;
mod policy_cmd;
mod preset_cmd;
mod proxy;
mod records_cmd;
mod serve;
mod tls;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "mailaudit",
    version,
    about = "Exchange-grade mailbox audit logging for any mail server"
)]
struct Cli {
    /// The data directory: the store, the signing key and the policy live here.
    #[arg(
        long,
        global = true,
        env = "MAILAUDIT_DATA_DIR",
        default_value = "./mailaudit-data"
    )]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Creates the data directory, the store and the Ed25519 signing key.
    Init {
        /// A name for this log, used in its checkpoints' origin line.
        #[arg(long)]
        name: Option<String>,
    },
    /// Runs the HTTP API.
    Serve(serve::ServeArgs),
    /// Searches the audit log, newest first. Every search is itself recorded.
    Search(records_cmd::SearchArgs),
    /// Exports every matching record as CSV, JSON Lines or Exchange's SearchResult.xml.
    Export(records_cmd::ExportArgs),
    /// Shows or changes the audit policy (like Get-Mailbox | fl Audit* and Set-Mailbox -Audit*).
    #[command(subcommand)]
    Policy(policy_cmd::PolicyCommand),
    /// Manages bypass associations: actors whose mailbox access is not recorded.
    #[command(subcommand)]
    Bypass(policy_cmd::BypassCommand),
    /// Re-derives the Merkle tree from every stored record and checks every checkpoint.
    Verify {
        /// The verifier key (`name+id+key`, or a file holding it). Defaults to the data
        /// directory's `signing.pub`; pass a copy kept elsewhere for real assurance.
        #[arg(long)]
        key: Option<String>,
    },
    /// Writes an inclusion proof of one record, with the signed checkpoint it is proved in.
    Proof {
        id: u64,
        /// Where to write the proof (JSON); standard output by default.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Checks an inclusion proof offline against a verifier key.
    VerifyProof {
        file: PathBuf,
        /// The verifier key (`name+id+key`, or a file holding it).
        #[arg(long)]
        key: String,
    },
    /// Signs a checkpoint now (`serve` also signs one on its own cadence).
    Checkpoint,
    /// Applies retention now: removes record contents past their age limit, keeping hashes.
    Prune,
    /// Manages API bearer tokens.
    #[command(subcommand)]
    Token(records_cmd::TokenCommand),
    /// Imports history from other systems' logs into the store.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Measures ingest, query latency and bytes per record against grep over JSON lines.
    Bench(bench::BenchArgs),
    /// Measures the Dovecot source (file and HTTP paths) against raw ingest.
    BenchDovecot(bench_dovecot::BenchDovecotArgs),
    /// Measures latency from record submission to alert delivery (webhook, syslog).
    BenchAlerts(bench_alerts::BenchAlertsArgs),
    /// Measures each importer (records/s) on a generated file against grep -c over it.
    BenchImport(bench_import::BenchImportArgs),
    /// Shows, per source and mailbox, the time ranges imported files cover, and the gaps.
    Coverage {
        /// Only this mailbox.
        #[arg(long)]
        mailbox: Option<String>,
    },
    /// Times the web console's pages on generator records (10 million by default).
    BenchConsole(bench_console::BenchConsoleArgs),
    /// Manages the web console's local accounts (admins and auditors).
    #[command(subcommand)]
    User(console_cmd::UserCommand),
    /// Audits sending through the MTA's milter protocol (Postfix smtpd_milters): Send, SendAs,
    /// SendOnBehalf, and logins over an hourly limit. See docs/postfix.md.
    Milter(milter::MilterArgs),
    /// Measures messages per second through a real Postfix with the milter against without it.
    BenchMilter(bench_milter::BenchMilterArgs),
    /// Runs the auditing IMAP proxy in front of an IMAP server (docs/imap-proxy.md).
    Proxy(proxy::ProxyArgs),
    /// Measures an IMAP server directly and through the auditing proxy, side by side.
    BenchImapProxy(bench_imap_proxy::BenchImapProxyArgs),
}

#[derive(Subcommand)]
enum ImportCommand {
    /// Dovecot log files (mail_log lines, login lines, events exported with transport=log).
    Dovecot {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        dovecot: dovecot::DovecotArgs,
    },
    #[command(flatten)]
    Formats(import_cmd::FormatCommand),
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "mailaudit=info,mailaudit_server=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("mailaudit: {e:#}");
            std::process::exit(2);
        }
    }
}

/// Returns the process exit code: 0 success, 1 a check failed (verify), 2 an error.
fn run(cli: Cli) -> Result<i32> {
    let dir = cli.data_dir;
    match cli.command {
        Command::Init { name } => {
            let created = datadir::init(&dir, name.as_deref())?;
            println!("initialised {}", dir.display());
            println!("verifier key: {}", created.verifier);
            println!("keep a copy of this key (and of checkpoints) outside this machine: verify --key uses it to detect a rewritten log");
            Ok(0)
        }
        Command::Serve(args) => serve::run(&dir, args),
        Command::Search(args) => records_cmd::search(&dir, args),
        Command::Export(args) => records_cmd::export(&dir, args),
        Command::Policy(cmd) => policy_cmd::policy(&dir, cmd),
        Command::Bypass(cmd) => policy_cmd::bypass(&dir, cmd),
        Command::Verify { key } => records_cmd::verify(&dir, key.as_deref()),
        Command::Proof { id, output } => records_cmd::proof(&dir, id, output.as_deref()),
        Command::VerifyProof { file, key } => records_cmd::verify_proof(&file, &key),
        Command::Checkpoint => {
            let mut auditor = datadir::open_auditor(&dir)?;
            let cp = auditor.checkpoint()?;
            print!("{}", cp.note);
            Ok(0)
        }
        Command::Prune => {
            let mut auditor = datadir::open_auditor(&dir)?;
            let n = auditor.prune(mailaudit_model::Timestamp::now())?;
            println!("pruned {n} records past their retention; their leaf hashes are kept");
            Ok(0)
        }
        Command::Token(cmd) => records_cmd::token(&dir, cmd),
        Command::Bench(args) => bench::run(args),
        Command::BenchDovecot(args) => bench_dovecot::run(args),
        Command::BenchAlerts(args) => bench_alerts::run(args),
        Command::User(cmd) => console_cmd::user(&dir, cmd),
        Command::BenchConsole(args) => bench_console::run(args),
        Command::Milter(args) => milter::run(&dir, args),
        Command::BenchMilter(args) => bench_milter::run(args),
        Command::Proxy(args) => proxy::run(&dir, args),
        Command::BenchImapProxy(args) => bench_imap_proxy::run(args),
        Command::Import(ImportCommand::Dovecot { files, dovecot }) => {
            dovecot::import(&dir, &files, &dovecot)
        }
        Command::Import(ImportCommand::Formats(cmd)) => import_cmd::run(&dir, cmd),
        Command::BenchImport(args) => bench_import::run(args),
        Command::Coverage { mailbox } => import_cmd::coverage(&dir, mailbox.as_deref()),
    }
}
