use super::*;
use std::io::Write;

fn append(path: &Path, text: &str) {
    append_bytes(path, text.as_bytes());
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
}

fn texts(lines: &[Line]) -> Vec<String> {
    lines.iter().map(|l| l.text.clone()).collect()
}

fn drain(f: &mut Follower) -> Vec<Line> {
    let mut all = Vec::new();
    loop {
        let got = f.read_lines(1000).unwrap();
        if got.is_empty() {
            return all;
        }
        all.extend(got);
    }
}

#[test]
fn partial_lines_wait_for_their_newline_and_max_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("dovecot.log");
    let mut f = Follower::open(&log, None).unwrap();
    assert!(f.read_lines(10).unwrap().is_empty(), "no file yet");
    append(&log, "one\ntwo\r\nthr");
    assert_eq!(texts(&f.read_lines(10).unwrap()), ["one", "two"]);
    assert!(f.read_lines(10).unwrap().is_empty());
    append_bytes(&log, b"ee\nfour\nfive\n\xff\xfe bad utf8\n");
    let got = f.read_lines(2).unwrap();
    assert_eq!(texts(&got), ["three", "four"]);
    assert_eq!(got[1].number, 4);
    let got = f.read_lines(10).unwrap();
    assert_eq!(texts(&got)[0], "five");
    assert!(
        got[1].text.ends_with(" bad utf8"),
        "invalid UTF-8 is replaced, not dropped"
    );
}

#[test]
fn resuming_from_a_position_repeats_and_skips_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("dovecot.log");
    append(&log, "a\nb\nc\n");
    let mut f = Follower::open(&log, None).unwrap();
    let got = f.read_lines(2).unwrap();
    let saved = got[1].after.clone();
    drop(f);
    append(&log, "d\n");
    let mut f = Follower::open(&log, Some(saved)).unwrap();
    let rest = drain(&mut f);
    assert_eq!(texts(&rest), ["c", "d"]);
    assert_eq!(rest[0].number, 3);
}

#[test]
fn rename_rotation_while_following_reads_the_old_file_to_its_end_first() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("dovecot.log");
    append(&log, "1\n2\n");
    let mut f = Follower::open(&log, None).unwrap();
    assert_eq!(texts(&drain(&mut f)), ["1", "2"]);
    append(&log, "3\n");
    std::fs::rename(&log, dir.path().join("dovecot.log.1")).unwrap();
    append(
        &dir.path().join("dovecot.log.1"),
        "4 (written before the writer reopened)\n",
    );
    append(&log, "5\n");
    let got = drain(&mut f);
    assert_eq!(
        texts(&got),
        ["3", "4 (written before the writer reopened)", "5"]
    );
    assert_eq!((got[2].number, got[2].generation), (1, 1));
}

#[test]
fn copytruncate_while_following_reads_the_copy_then_the_truncated_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("dovecot.log");
    append(&log, "1\n2\n");
    let mut f = Follower::open(&log, None).unwrap();
    assert_eq!(texts(&drain(&mut f)), ["1", "2"]);
    append(&log, "3\n4\n");
    std::fs::copy(&log, dir.path().join("dovecot.log.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&log, "5\n");
    let got = drain(&mut f);
    assert_eq!(texts(&got), ["3", "4", "5"]);
    assert_eq!(got[2].generation, 1);
}

#[test]
fn restart_after_rename_rotation_while_down() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("dovecot.log");
    append(&log, "1\n2\n");
    let mut f = Follower::open(&log, None).unwrap();
    let saved = f.read_lines(1).unwrap()[0].after.clone();
    drop(f);
    append(&log, "3\n");
    std::fs::rename(&log, dir.path().join("dovecot.log-20261124")).unwrap();
    append(&log, "4\n");
    let mut f = Follower::open(&log, Some(saved)).unwrap();
    assert_eq!(texts(&drain(&mut f)), ["2", "3", "4"]);
}

#[test]
fn restart_after_copytruncate_while_down() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("dovecot.log");
    append(&log, "1\n2\n3\n");
    let mut f = Follower::open(&log, None).unwrap();
    let saved = f.read_lines(2).unwrap()[1].after.clone();
    drop(f);
    std::fs::copy(&log, dir.path().join("dovecot.log.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&log, "4\n5\n6\n7\n");
    let mut f = Follower::open(&log, Some(saved)).unwrap();
    assert_eq!(texts(&drain(&mut f)), ["3", "4", "5", "6", "7"]);
}

#[test]
fn a_position_whose_file_is_gone_is_reported_not_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("dovecot.log");
    append(&log, "1\n2\n");
    let mut f = Follower::open(&log, None).unwrap();
    let saved = f.read_lines(1).unwrap()[0].after.clone();
    drop(f);
    std::fs::remove_file(&log).unwrap();
    append(&log, "new\n");
    assert!(matches!(
        Follower::open(&log, Some(saved)),
        Err(TailError::Lost { .. })
    ));
}
