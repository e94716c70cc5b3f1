"""A mailbox story told with Python's imaplib, for the IMAP proxy tests
(crates/cli/tests/integration/imap_proxy.rs). It records every byte each session received
and prints, per session, a JSON line with that transcript, so that the test can compare what
a client receives directly from Dovecot and through the proxy.

Usage:
  imap_proxy_story.py story HOST PORT          the whole story (see below)
  imap_proxy_story.py append HOST PORT SUBJECT SIZE   alice appends one message; prints the reply
  imap_proxy_story.py idle HOST PORT           alice IDLEs while a second session appends
  imap_proxy_story.py compress HOST PORT        alice reads message 1 after COMPRESS DEFLATE
  imap_proxy_story.py cyrus HOST PORT           the owner's story against Cyrus
  imap_proxy_story.py frozen HOST PORT DIR      login; wait for the test to freeze the store; SELECT; STORE
  imap_proxy_story.py tls HOST PORT CAFILE     alice logs in over implicit TLS and selects INBOX

Only the volatile parts of a transcript are normalised, each by a narrow pattern: UIDVALIDITY
values (and the UIDVALIDITY inside APPENDUID/COPYUID), which Dovecot derives from the clock
when a folder is created, and Dovecot's command timings "(0.001 + 0.000 secs)".
"""

import base64
import imaplib
import json
import random
import re
import socket
import sys

imaplib.Commands.setdefault("ID", ("NONAUTH", "AUTH", "SELECTED"))
imaplib.Commands.setdefault("MOVE", ("SELECTED",))
imaplib.Commands.setdefault("IDLE", ("AUTH", "SELECTED"))


class Recording(imaplib.IMAP4):
    """imaplib, keeping every byte the server sent."""

    def __init__(self, host, port):
        self.received = bytearray()
        # imaplib draws its tag prefix at random: the same one in both runs.
        random.seed(7)
        super().__init__(host, port, timeout=60)

    def read(self, size):
        data = super().read(size)
        self.received += data
        return data

    def readline(self):
        line = super().readline()
        self.received += line
        return line


def normalise(data):
    text = data.decode("utf-8", "replace")
    text = re.sub(r"UIDVALIDITY \d+", "UIDVALIDITY N", text)
    text = re.sub(r"(APPENDUID|COPYUID) \d+", r"\1 N", text)
    text = re.sub(r"\(\d+\.\d+ \+ \d+\.\d+( \+ \d+\.\d+)? secs\)", "(T secs)", text)
    # Cyrus: a session id, and a mailbox id drawn at random when the mailbox is created.
    text = re.sub(r"SESSIONID=<[^>]*>", "SESSIONID=<S>", text)
    text = re.sub(r"MAILBOXID \([^)]*\)", "MAILBOXID (M)", text)
    return text


def show(name, session):
    print(json.dumps({"session": name, "transcript": normalise(bytes(session.received))}))


def check(what, reply, ok=True):
    typ, data = reply
    if (typ == "OK") != ok:
        raise SystemExit(f"{what}: unexpected reply {typ} {data!r}")
    return data


def message(subject, msgid, body="Hello.\r\n"):
    return (
        f"From: Erin <erin@example.org>\r\nTo: alice@example.com\r\n"
        f"Subject: {subject}\r\nMessage-ID: {msgid}\r\n\r\n{body}"
    ).encode()


def story(host, port):
    s = Recording(host, port)
    try:
        s.login("alice", "wrong")
        raise SystemExit("a wrong password was accepted")
    except imaplib.IMAP4.error:
        pass
    s.logout()
    show("wrong-password", s)

    a = Recording(host, port)
    check("login", a.login("alice", "alicepw"))
    check("id", a._simple_command("ID", '("name" "story-client" "version" "1.0")'))
    check("namespace", a.namespace())
    for subject, msgid in [
        ("Quarterly numbers", "<q1@example.org>"),
        ("Lunch", "<l2@example.org>"),
        ("Board minutes", "<b3@example.org>"),
    ]:
        check("append", a.append("INBOX", None, None, message(subject, msgid)))
    check("select", a.select("INBOX"))
    data = check("fetch", a.uid("FETCH", "1", "(BODY.PEEK[])"))
    if b"Quarterly numbers" not in data[0][1]:
        raise SystemExit(f"fetch returned {data!r}")
    check("move", a.uid("MOVE", "2", "Trash"))
    check("store", a.uid("STORE", "1", "+FLAGS", "(\\Deleted)"))
    check("expunge", a.expunge())
    check("setacl", a.setacl("INBOX", "bob", "lr"))
    a.logout()
    show("alice", a)

    b = Recording(host, port)
    check("bob login", b.login("bob", "bobpw"))
    check("bob select", b.select('"shared/alice/INBOX"', readonly=True))
    data = check("bob fetch", b.uid("FETCH", "3", "(BODY.PEEK[])"))
    if b"Board minutes" not in data[0][1]:
        raise SystemExit(f"bob's fetch returned {data!r}")
    b.logout()
    show("bob", b)

    m = Recording(host, port)
    check("admin", m.authenticate("PLAIN", lambda _: b"carol\0admin\0adminpw"))
    check("admin select", m.select("INBOX"))
    m.logout()
    show("admin", m)
    print("story complete")


def append(host, port, subject, size):
    a = Recording(host, port)
    check("login", a.login("alice", "alicepw"))
    body = ("x" * 76 + "\r\n") * (int(size) // 78 + 1)
    typ, data = a.append("INBOX", None, None, message(subject, "<big@example.org>", body))
    print(json.dumps({"reply": typ, "data": [d.decode("utf-8", "replace") if isinstance(d, bytes) else str(d) for d in data]}))
    a.logout()


def idle(host, port):
    a = Recording(host, port)
    check("login", a.login("alice", "alicepw"))
    check("select", a.select("INBOX"))
    tag = a._new_tag().decode()
    a.send(f"{tag} IDLE\r\n".encode())
    line = a.readline()
    if not line.startswith(b"+"):
        raise SystemExit(f"IDLE answered {line!r}")
    other = Recording(host, port)
    check("other login", other.login("alice", "alicepw"))
    check("other append", other.append("INBOX", None, None, message("During idle", "<idle@example.org>")))
    other.logout()
    while True:
        line = a.readline()
        if b"EXISTS" in line:
            break
        if not line:
            raise SystemExit("the connection closed during IDLE")
    a.send(b"DONE\r\n")
    while True:
        line = a.readline()
        if line.startswith(tag.encode()):
            if b" OK" not in line:
                raise SystemExit(f"IDLE ended with {line!r}")
            break
    a.logout()
    print("idle complete")


def compress(host, port):
    """COMPRESS=DEFLATE (RFC 4978) by hand: imaplib has no support for it."""
    import zlib
    s = socket.create_connection((host, port), timeout=60)
    f = s.makefile("rb")
    got = bytearray()

    def until(tag):
        while True:
            line = f.readline()
            got.extend(line)
            if not line or line.startswith(tag):
                return line

    until(b"*")
    s.sendall(b"c1 LOGIN alice alicepw\r\n")
    until(b"c1 ")
    s.sendall(b"c2 COMPRESS DEFLATE\r\n")
    if b" OK" not in until(b"c2 "):
        raise SystemExit(f"COMPRESS refused: {bytes(got)!r}")
    out = zlib.compressobj(wbits=-15)
    inp = zlib.decompressobj(wbits=-15)
    plain = bytearray()

    def zcommand(tag, cmd):
        s.sendall(out.compress(tag + b" " + cmd + b"\r\n") + out.flush(zlib.Z_SYNC_FLUSH))
        while not re.search(rb"(^|\n)" + tag + rb" [A-Z]+[^\n]*\n", bytes(plain)):
            data = s.recv(65536)
            if not data:
                raise SystemExit(f"connection closed during {cmd!r}: {bytes(plain)!r}")
            plain.extend(inp.decompress(data))

    # EXAMINE: a read-only session leaves \Recent to the next one, so both runs see the same.
    zcommand(b"c3", b"EXAMINE INBOX")
    zcommand(b"c4", b"UID FETCH 1 (BODY.PEEK[])")
    zcommand(b"c5", b"LOGOUT")
    print(json.dumps({"session": "compress", "transcript": normalise(bytes(got) + bytes(plain))}))
    print("compress complete")


def cyrus(host, port):
    """Owner login, append, read, move to Trash, delete and expunge, against Cyrus."""
    a = Recording(host, port)
    check("login", a.login("alice", "alicepw"))
    for subject, msgid in [("Quarterly numbers", "<q1@example.org>"), ("Lunch", "<l2@example.org>")]:
        check("append", a.append("INBOX", None, None, message(subject, msgid)))
    check("select", a.select("INBOX"))
    data = check("fetch", a.uid("FETCH", "1", "(BODY.PEEK[])"))
    if b"Quarterly numbers" not in data[0][1]:
        raise SystemExit(f"fetch returned {data!r}")
    check("move", a.uid("MOVE", "2", "Trash"))
    check("store", a.uid("STORE", "1", "+FLAGS", "(\\Deleted)"))
    check("expunge", a.expunge())
    a.logout()
    show("cyrus", a)
    print("cyrus complete")


def frozen(host, port, signal_dir):
    """Logs in, tells the test (file `ready`), waits for it to freeze the store (file
    `frozen`), then selects and marks message 1 deleted; prints each reply."""
    import os
    import time
    a = Recording(host, port)
    check("login", a.login("alice", "alicepw"))
    open(os.path.join(signal_dir, "ready"), "w").close()
    while not os.path.exists(os.path.join(signal_dir, "frozen")):
        time.sleep(0.05)
    replies = {}
    typ, data = a.select("INBOX")
    replies["select"] = typ
    try:
        typ, data = a.uid("STORE", "1", "+FLAGS", "(\\Deleted)")
        replies["store"] = f"{typ} {data[0].decode() if data and data[0] else ''}"
    except imaplib.IMAP4.error as e:
        replies["store"] = str(e)
    a.logout()
    print(json.dumps(replies))


def tls(host, port, cafile):
    import ssl
    ctx = ssl.create_default_context(cafile=cafile)
    a = imaplib.IMAP4_SSL(host, port, ssl_context=ctx, timeout=60)
    check("login", a.login("alice", "alicepw"))
    check("select", a.select("INBOX"))
    a.logout()
    print("tls complete")


if __name__ == "__main__":
    cmd, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if cmd == "story":
        story(host, port)
    elif cmd == "append":
        append(host, port, sys.argv[4], sys.argv[5])
    elif cmd == "compress":
        compress(host, port)
    elif cmd == "cyrus":
        cyrus(host, port)
    elif cmd == "frozen":
        frozen(host, port, sys.argv[4])
    elif cmd == "tls":
        tls(host, port, sys.argv[4])
    elif cmd == "idle":
        idle(host, port)
    else:
        raise SystemExit(f"unknown command {cmd}")
