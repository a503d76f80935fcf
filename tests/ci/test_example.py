"""Example tests of a mail-sending function against mailfault, one scenario
per test (run by `cargo test --test ci_python`; see docs/ci.md)."""

import smtplib
from email.message import EmailMessage

import pytest


def send_order_mail(host, port, to, tries=3):
    """The 'application': sends one mail, retries a 4xx, never a 5xx.
    Returns the attempts' outcomes (250 or the refusal code)."""
    msg = EmailMessage()
    msg["From"] = "shop@example.test"
    msg["To"] = to
    msg["Subject"] = "Your order 42"
    msg.set_content("Thank you for your order.\n")
    outcomes = []
    for _ in range(tries):
        try:
            with smtplib.SMTP(host, port, timeout=10) as smtp:
                smtp.send_message(msg)
            outcomes.append(250)
            return outcomes
        except smtplib.SMTPRecipientsRefused as e:
            code = next(iter(e.recipients.values()))[0]
            outcomes.append(code)
            if code >= 500:
                return outcomes
    return outcomes


def test_a_deferred_mail_is_retried_and_delivered(mailfault):
    mf = mailfault.start("""
        [[rule]]
        on = "rcpt"
        reply = "451 4.3.0 Try again later"
        times = 2

        [[expect]]
        name = "delivered on the third attempt"
        rcpt = "ann@example.test"
        delivered = true
        attempts = 3
    """)
    assert send_order_mail(mf.host, mf.port, "ann@example.test") == [451, 451, 250]
    m = mf.wait_for_message(rcpt="ann@example.test")
    assert m["mail_from"] == "shop@example.test"
    verdict = mf.report_check()
    assert verdict.returncode == 0, verdict.stdout + verdict.stderr
    assert "1 of 1 expectation met" in verdict.stdout


def test_a_bounced_mail_is_not_retried(mailfault):
    mf = mailfault.start("""
        [[rule]]
        on = "rcpt"
        reply = "550 5.1.1 No such user"

        [[expect]]
        name = "no retry after 550"
        no_retry_after_permanent = true
        attempts = 1
    """)
    assert send_order_mail(mf.host, mf.port, "gone@example.test") == [550]
    verdict = mf.report_check()
    assert verdict.returncode == 0, verdict.stdout + verdict.stderr


def test_report_check_fails_a_sender_that_gives_up(mailfault):
    mf = mailfault.start("""
        [[rule]]
        on = "rcpt"
        reply = "451 4.3.0 Try again later"
        times = 1

        [[expect]]
        name = "delivered in the end"
        delivered = true
    """)
    assert send_order_mail(mf.host, mf.port, "bob@example.test", tries=1) == [451]
    with pytest.raises(AssertionError):
        mf.wait_for_message(rcpt="bob@example.test", timeout=0.3)
    verdict = mf.report_check()
    assert verdict.returncode == 1, verdict.stdout + verdict.stderr
    assert "delivered in the end" in verdict.stdout


def test_each_test_has_its_own_port_and_counters(mailfault):
    once = """
        [[rule]]
        on = "rcpt"
        reply = "451 4.3.0 Try again later"
        times = 1
    """
    a, b = mailfault.start(once, "a"), mailfault.start(once, "b")
    assert a.port != b.port
    assert send_order_mail(a.host, a.port, "c@example.test") == [451, 250]
    # b's counter is its own: its first attempt is deferred too.
    assert send_order_mail(b.host, b.port, "c@example.test") == [451, 250]
