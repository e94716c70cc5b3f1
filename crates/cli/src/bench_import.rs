//! `mailaudit bench-import`: how fast each importer reads, in records per second, on a
//! generated file of realistic records (about 1 GB by default), next to `grep -c` counting
//! the same records in the same file: the floor of any tool that reads every byte.
//!
//! The importers are timed reading and mapping (what `import` does before the pipeline);
//! the store's own ingest rate is `mailaudit bench`'s subject.

use crate::bench::grep_count;
use anyhow::{bail, Result};
use clap::Args;
use mailaudit_source_import::{open, Context, Format, Parsed};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct BenchImportArgs {
    /// Size of each generated file, in MiB.
    #[arg(long, default_value_t = 1024)]
    size_mb: u64,
    /// Formats to measure (comma-separated); all text formats by default. (`.evtx` is not
    /// generated here: its writer is test-only.)
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "exchange-csv,exchange-xml,m365-csv,m365-jsonl,iis,wevtutil-xml,cyrus,zimbra"
    )]
    formats: Vec<String>,
    /// Where the generated files are written (and removed afterwards).
    #[arg(long, default_value = "./mailaudit-bench-import")]
    dir: PathBuf,
}

/// A header, one record per index, a footer, and the `grep -E` pattern that counts records.
struct Generator {
    header: &'static str,
    record: fn(u64) -> String,
    footer: &'static str,
    grep: &'static str,
}

fn time(i: u64) -> (String, String) {
    let secs = 1_600_000_000 + i as i64;
    let dt = chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default();
    (
        dt.format("%Y-%m-%d").to_string(),
        dt.format("%H:%M:%S").to_string(),
    )
}

fn generator(format: Format) -> Option<Generator> {
    Some(match format {
        Format::ExchangeCsv => Generator {
            header: "#TYPE Microsoft.Exchange.Management.AuditLogSearch.MailboxAuditLogEvent\r\n\"Operation\",\"OperationResult\",\"LogonType\",\"ExternalAccess\",\"FolderPathName\",\"ClientInfoString\",\"ClientIPAddress\",\"MailboxOwnerUPN\",\"LogonUserDisplayName\",\"ItemSubject\",\"OriginatingServer\",\"LastAccessed\"\r\n",
            record: |i| {
                let (d, t) = time(i);
                format!("\"SoftDelete\",\"Succeeded\",\"Delegate\",\"False\",\"\\Inbox\",\"Client=MSExchangeRPC\",\"2001:db8::{:x}\",\"user{}@example.com\",\"Delegate {}\",\"Invoice {i}, \"\"final\"\" – Q3\",\"EX01\",\"{d}T{t}+02:00\"\r\n", i % 65535, i % 5000, i % 97)
            },
            footer: "",
            grep: "^\"SoftDelete\"",
        },
        Format::ExchangeXml => Generator {
            header: "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<SearchResults>\n",
            record: |i| {
                let (d, t) = time(i);
                format!("  <Event MailboxGuid=\"0a1b2c3d-0000-4000-8000-00000000abcd\" Owner=\"User {m}\" LastAccessed=\"{d}T{t}Z\" Operation=\"HardDelete\" OperationResult=\"Succeeded\" LogonType=\"Delegate\" ExternalAccess=\"false\" FolderPathName=\"\\Deleted Items\" ClientInfoString=\"Client=MSExchangeRPC\" ClientIPAddress=\"192.0.2.{o}\" MailboxOwnerUPN=\"user{m}@example.com\" LogonUserDisplayName=\"Delegate {o}\">\n    <SourceItems>\n      <ItemId Id=\"RgAAAA{i}\" Subject=\"Q3 figures &amp; notes {i}\" FolderPathName=\"\\Deleted Items\" />\n    </SourceItems>\n  </Event>\n", m = i % 5000, o = i % 250)
            },
            footer: "</SearchResults>\n",
            grep: "<Event ",
        },
        Format::M365Csv => Generator {
            header: "CreationDate,UserIds,Operations,AuditData\r\n",
            record: |i| {
                let (d, t) = time(i);
                let data = format!("{{\"CreationTime\":\"{d}T{t}\",\"Id\":\"{i:08x}-0000-4000-8000-000000000000\",\"Operation\":\"MailItemsAccessed\",\"RecordType\":50,\"ResultStatus\":\"Succeeded\",\"UserId\":\"delegate{o}@contoso.example\",\"Workload\":\"Exchange\",\"ClientIPAddress\":\"[2001:db8::{o:x}]:443\",\"LogonType\":2,\"MailboxOwnerUPN\":\"user{m}@contoso.example\",\"OperationProperties\":[{{\"Name\":\"MailAccessType\",\"Value\":\"Bind\"}},{{\"Name\":\"IsThrottled\",\"Value\":\"False\"}}],\"Folders\":[{{\"Path\":\"\\\\Inbox\",\"FolderItems\":[{{\"InternetMessageId\":\"<m{i}@contoso.example>\"}}]}}]}}", o = i % 97, m = i % 5000);
                format!("{d}T{t}.0000000Z,delegate{}@contoso.example,MailItemsAccessed,\"{}\"\r\n", i % 97, data.replace('"', "\"\""))
            },
            footer: "",
            grep: "^[0-9]{4}-",
        },
        Format::M365Jsonl => Generator {
            header: "",
            record: |i| {
                let (d, t) = time(i);
                format!("{{\"CreationTime\":\"{d}T{t}\",\"Id\":\"{i:08x}-0000-4000-8000-000000000000\",\"Operation\":\"SoftDelete\",\"RecordType\":2,\"ResultStatus\":\"Succeeded\",\"UserId\":\"user{m}@contoso.example\",\"Workload\":\"Exchange\",\"ClientIP\":\"198.51.100.{o}\",\"LogonType\":0,\"MailboxOwnerUPN\":\"user{m}@contoso.example\",\"Item\":{{\"InternetMessageId\":\"<m{i}@contoso.example>\",\"ParentFolder\":{{\"Path\":\"\\\\Inbox\"}},\"Subject\":\"Bonus {i}, \\\"2023\\\"\"}}}}\n", m = i % 5000, o = i % 250)
            },
            footer: "",
            grep: "CreationTime",
        },
        Format::Iis => Generator {
            header: "#Software: Microsoft Internet Information Services 8.5\r\n#Version: 1.0\r\n#Fields: date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip cs(User-Agent) sc-status sc-substatus sc-win32-status time-taken\r\n",
            record: |i| {
                let (d, t) = time(i);
                format!("{d} {t} 192.0.2.10 GET /exchange/user{m}@example.com/Inbox/Message+{i}.EML Cmd=open 443 EXAMPLE\\delegate{o} 2001:db8::{o:x} Mozilla/5.0+(Windows+NT+10.0) 200 0 0 15\r\n", m = i % 5000, o = i % 97)
            },
            footer: "",
            grep: "^[0-9]{4}-",
        },
        Format::WevtutilXml => Generator {
            header: "",
            record: |i| {
                let (d, t) = time(i);
                format!("<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System><Provider Name='MSExchangeIS Mailbox Store'/><EventID Qualifiers='16384'>1016</EventID><TimeCreated SystemTime='{d}T{t}.000000000Z'/><EventRecordID>{i}</EventRecordID><Channel>Application</Channel><Computer>EX01.example.com</Computer><Security/></System><EventData><Data>EXAMPLE\\delegate{}</Data><Data>user{}</Data></EventData></Event>\r\n", i % 97, i % 5000)
            },
            footer: "",
            grep: "</Event>",
        },
        Format::Cyrus => Generator {
            header: "2020-09-13T12:26:39.000000+00:00 mail imap[1]: login: client.example.com [2001:db8::7] delegate plaintext+TLS User logged in SESSIONID=<s-1>\n",
            record: |i| {
                let (d, t) = time(i);
                format!("{d}T{t}.000000+00:00 mail imap[1]: auditlog: expunge sessionid=<s-1> mailbox=<example.com!user.user{}.Projects> uniqueid=<a1b2c3> uid=<{i}> guid=<0123abcd> cid=<deadbeef>\n", i % 5000)
            },
            footer: "",
            grep: "auditlog:",
        },
        Format::Zimbra => Generator {
            header: "",
            record: |i| {
                let (d, t) = time(i);
                format!("{d} {t},123 INFO  [qtp1-12] [name=user{}@example.com;aname=delegate{}@example.com;mid=5;ip=2001:db8::9;ua=ZimbraWebClient;] mailop - Moving Message (id={i}) to Folder Trash (id=3)\n", i % 5000, i % 97)
            },
            footer: "",
            grep: "mailop",
        },
        Format::Evtx => return None,
    })
}

fn generate(path: &Path, g: &Generator, bytes: u64) -> Result<u64> {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    out.write_all(g.header.as_bytes())?;
    let (mut written, mut i) = (g.header.len() as u64, 0u64);
    while written < bytes {
        let r = (g.record)(i);
        written += r.len() as u64;
        out.write_all(r.as_bytes())?;
        i += 1;
    }
    out.write_all(g.footer.as_bytes())?;
    out.flush()?;
    Ok(i)
}

pub fn run(args: BenchImportArgs) -> Result<i32> {
    std::fs::create_dir_all(&args.dir)?;
    let bytes = args.size_mb * 1024 * 1024;
    println!(
        "{:<13} {:>9} {:>11} {:>13} {:>9} {:>13} {:>9} {:>8}",
        "format", "MiB", "records", "import rec/s", "MiB/s", "grep -c rec/s", "MiB/s", "vs grep"
    );
    for name in &args.formats {
        let format: Format = name.parse()?;
        let Some(g) = generator(format) else {
            println!("{name:<13} (not generated by this benchmark)");
            continue;
        };
        let path = args.dir.join(format!("bench.{name}"));
        let n = generate(&path, &g, bytes)?;
        let size = std::fs::metadata(&path)?.len();
        let (grep_n, grep_time) = grep_count(&path, g.grep)?;
        let ctx = Context {
            file: path.display().to_string(),
            timezone: Some(mailaudit_source_import::ImportZone::utc()),
            domain: Some("example.com".into()),
            year: None,
        };
        let input = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(&path)?);
        let start = Instant::now();
        let (mut records, mut other) = (0u64, 0u64);
        for p in open(format, input, ctx) {
            match p {
                Parsed::Record(r) => {
                    records += 1;
                    std::hint::black_box(r);
                }
                _ => other += 1,
            }
        }
        let took = start.elapsed();
        std::fs::remove_file(&path)?;
        if records != n || grep_n != n {
            bail!("{name}: generated {n} records, the importer read {records} (and {other} other), grep counted {grep_n}");
        }
        let mib = size as f64 / (1024.0 * 1024.0);
        let rate = |d: Duration| n as f64 / d.as_secs_f64();
        let mibs = |d: Duration| mib / d.as_secs_f64();
        println!(
            "{name:<13} {mib:>9.0} {n:>11} {:>13.0} {:>9.1} {:>13.0} {:>9.1} {:>7.1}x",
            rate(took),
            mibs(took),
            rate(grep_time),
            mibs(grep_time),
            took.as_secs_f64() / grep_time.as_secs_f64()
        );
    }
    let _ = std::fs::remove_dir(&args.dir);
    Ok(0)
}
