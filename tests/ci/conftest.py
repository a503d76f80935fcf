"""pytest fixtures that run mailfault for each test (see docs/ci.md).

Standard library and pytest only. Each test gets its own mailfault process
on a free loopback port, with its own scenario and counters, and a
transcript to judge with `mailfault report --check`:

    def test_retries(mailfault):
        mf = mailfault.start('''
            [[rule]]
            on = "rcpt"
            reply = "451 4.3.0 Try again"
            times = 1
        ''')
        send_with_my_app(host="127.0.0.1", port=mf.port)
        mf.wait_for_message(rcpt="ann@example.test")
        assert mf.report_check().returncode == 0

The binary is `$MAILFAULT`, else `mailfault` on PATH.
"""

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import textwrap
import threading
import time
from pathlib import Path

import pytest

LISTENING = re.compile(r"^listening smtp://(?P<host>[^ ]+):(?P<port>\d+) scenario=(?P<name>\S+)")
# How long mailfault may take to print its listening line.
START_TIMEOUT = 20.0
# How often the events file is looked at while waiting; mailfault writes
# every event there within 200 ms. (With the HTTP API, wait-for is one
# request: GET /api/v1/messages?rcpt=...&wait=10s.)
POLL = 0.05


def binary():
    found = os.environ.get("MAILFAULT") or shutil.which("mailfault")
    if not found:
        pytest.skip("mailfault not found: set MAILFAULT or put it on PATH")
    return found


class Mailfault:
    """One mailfault process serving one scenario on 127.0.0.1:<port>."""

    def __init__(self, exe, workdir, scenario_toml, name):
        self.exe = exe
        self.scenario = workdir / f"{name}.toml"
        self.scenario.write_text(textwrap.dedent(scenario_toml))
        self.events = workdir / f"{name}.events.jsonl"
        self.log = workdir / f"{name}.log"
        self._log = open(self.log, "w")
        self.proc = subprocess.Popen(
            [exe, "serve", "--listen", f"127.0.0.1:0={self.scenario}",
             "--events", str(self.events), "--no-watch", "--grace", "1s"],
            stdout=subprocess.PIPE, stderr=self._log, text=True,
        )
        self.host, self.port = self._read_port()

    def _read_port(self):
        # A reader thread: readline() alone could block past the deadline.
        lines = queue.Queue()

        def read():
            for line in self.proc.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                self.stop()
                raise RuntimeError(f"mailfault did not start: {self.log.read_text()}")
            m = LISTENING.match(line)
            if m:
                return m["host"], int(m["port"])

    def events_list(self):
        """The transcript so far (complete lines only)."""
        if not self.events.exists():
            return []
        text = self.events.read_text()
        complete = text[: text.rfind("\n") + 1]
        return [json.loads(l) for l in complete.splitlines() if l.strip()]

    def messages(self):
        """Message events: id, mail_from, rcpt, size, accepted, reply_code."""
        return [e for e in self.events_list() if e.get("type") == "message"]

    def wait_for_message(self, rcpt=None, timeout=10.0, accepted=True):
        """The first message to `rcpt` (any when None), waiting up to
        `timeout` seconds for it to arrive."""
        deadline = time.monotonic() + timeout
        while True:
            for m in self.messages():
                if m["accepted"] == accepted and (
                    rcpt is None or rcpt.lower() in (r.lower() for r in m["rcpt"])
                ):
                    return m
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"no message to {rcpt} within {timeout}s; got {self.messages()}"
                )
            time.sleep(POLL)

    def stop(self):
        """SIGTERM: mailfault stops accepting, lets sessions finish and
        flushes the transcript."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def report_check(self):
        """Stops the server, then runs `mailfault report --check` on its
        transcript: returncode 0 passed, 1 failed, 2 nothing to judge."""
        self.stop()
        return subprocess.run(
            [self.exe, "report", "--check", str(self.events)],
            capture_output=True, text=True, timeout=60,
        )


class Factory:
    def __init__(self, exe, workdir):
        self.exe = exe
        self.workdir = workdir
        self.started = []

    def start(self, scenario_toml, name="scenario"):
        """A new mailfault on a free port serving `scenario_toml`."""
        mf = Mailfault(self.exe, self.workdir, scenario_toml, f"{name}-{len(self.started)}")
        self.started.append(mf)
        return mf


@pytest.fixture
def mailfault(tmp_path):
    """Starts mailfault servers for one test; stops them all after it."""
    factory = Factory(binary(), Path(tmp_path))
    yield factory
    for mf in factory.started:
        mf.stop()
