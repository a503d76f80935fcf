#!/usr/bin/env python3
"""A stand-in for the application under test in docs/ci/github-actions.yml:
it sends one order confirmation through SMTP_HOST:SMTP_PORT and retries a
temporary (4xx) failure up to APP_MAX_TRIES times, as a mailer should.

Standard library only. Exits 0 even when it gives up: judging the sender is
the job of `mailfault report --check`, not of the app.
"""
import os
import smtplib
import sys
import time
from email.message import EmailMessage

host = os.environ.get("SMTP_HOST", "127.0.0.1")
port = int(os.environ["SMTP_PORT"])
tries = int(os.environ.get("APP_MAX_TRIES", "3"))

msg = EmailMessage()
msg["From"] = "shop@example.test"
msg["To"] = "customer@example.test"
msg["Subject"] = "Your order 42"
msg.set_content("Thank you for your order.\n")

for attempt in range(1, tries + 1):
    try:
        with smtplib.SMTP(host, port, timeout=10) as smtp:
            smtp.send_message(msg)
        print(f"delivered on attempt {attempt}")
        sys.exit(0)
    except smtplib.SMTPRecipientsRefused as e:
        code = next(iter(e.recipients.values()))[0]
        print(f"attempt {attempt}: refused with {code}")
        if code >= 500:
            break
        # A real mailer backs off for minutes; a short pause keeps CI fast.
        time.sleep(0.2)
print("gave up")
