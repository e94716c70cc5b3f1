"""A real SMTP server for the console's mailed-export test: Python 3.11's standard
smtpd/asyncore, on a free loopback port. Prints the port, then writes every message it
receives to OUTDIR/N.eml (written to N.tmp first, then renamed, so a reader never sees
half a message)."""
import asyncore
import os
import sys
import warnings

warnings.simplefilter("ignore", DeprecationWarning)
import smtpd  # noqa: E402  (deprecated in 3.11, still in the standard library there)

outdir = sys.argv[1]
count = 0


class Sink(smtpd.SMTPServer):
    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        global count
        count += 1
        tmp = os.path.join(outdir, f"{count}.tmp")
        with open(tmp, "wb") as f:
            f.write(b"X-Sink-Rcpt: " + ",".join(rcpttos).encode() + b"\r\n")
            f.write(data if isinstance(data, bytes) else data.encode())
        os.rename(tmp, os.path.join(outdir, f"{count}.eml"))


server = Sink(("127.0.0.1", 0), None, decode_data=False)
print(server.socket.getsockname()[1], flush=True)
asyncore.loop()
