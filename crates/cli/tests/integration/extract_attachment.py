"""Prints a JSON summary of a mail message: subject, recipients, the text body, and each
attachment's name and content (as text)."""
import email
import email.policy
import json
import sys

with open(sys.argv[1], "rb") as f:
    msg = email.message_from_binary_file(f, policy=email.policy.default)
out = {"subject": msg["subject"], "to": msg["to"], "body": "", "attachments": []}
for part in msg.walk():
    if part.is_multipart():
        continue
    name = part.get_filename()
    if name:
        out["attachments"].append(
            {"name": name, "type": part.get_content_type(), "content": part.get_content() if isinstance(part.get_content(), str) else part.get_content().decode()}
        )
    elif part.get_content_type() == "text/plain":
        out["body"] += part.get_content()
print(json.dumps(out))
