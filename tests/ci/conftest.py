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

Or one mailfault for the whole run, steered over its HTTP API: each test
PUTs its own scenario (its own port and counters) and waits for what
arrived with one request, no polling:

    def test_retries(scenario):
        sc = scenario('''
            [[rule]]
            on = "rcpt"
            reply = "451 4.3.0 Try again"
            times = 1
        ''')
        send_with_my_app(host=sc.host, port=sc.port)
        sc.api.wait_for_message(rcpt="ann@example.test")

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
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

LISTENING = re.compile(r"^listening smtp://(?P<host>[^ ]+):(?P<port>\d+) scenario=(?P<name>\S+)")
API_LISTENING = re.compile(r"^listening http://(?P<addr>\S+) api$")
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


def read_line_matching(server, pattern):
    """The first line of mailfault's stdout that matches `pattern`, read
    with a deadline (a reader thread: readline() alone could block past
    it); stops the server and raises with its log when none comes."""
    lines = queue.Queue()

    def read():
        for line in server.proc.stdout:
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
            server.stop()
            raise RuntimeError(f"mailfault did not start: {server.log.read_text()}")
        m = pattern.match(line.rstrip("\n"))
        if m:
            return m


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
        m = read_line_matching(self, LISTENING)
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


class ApiError(Exception):
    """A 4xx/5xx from the API: `status` and the JSON body (`error`, and
    for an invalid scenario `diagnostics`: every line, col and message)."""

    def __init__(self, status, body):
        super().__init__(f"{status}: {body.get('error')}")
        self.status = status
        self.body = body


class MailfaultApi:
    """One mailfault for the whole run, steered over its HTTP API."""

    def __init__(self, exe, workdir):
        self.log = workdir / "mailfault-api.log"
        self._log = open(self.log, "w")
        self.proc = subprocess.Popen(
            [exe, "serve", "--listen", "127.0.0.1:0", "--api", "127.0.0.1:0",
             "--no-watch", "--grace", "1s"],
            stdout=subprocess.PIPE, stderr=self._log, text=True,
        )
        self.base = "http://" + read_line_matching(self, API_LISTENING)["addr"]

    def request(self, method, path, body=None, ctype=None, timeout=30):
        """(status, parsed JSON or None); raises ApiError for 4xx/5xx."""
        data = body.encode() if isinstance(body, str) else body
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if ctype:
            req.add_header("Content-Type", ctype)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raise ApiError(e.code, json.loads(e.read() or b"{}")) from None

    def put(self, name, scenario_toml):
        """Adds (201) or replaces (200) scenario `name`: its name, addr, port."""
        return self.request("PUT", f"/api/v1/scenarios/{name}",
                            textwrap.dedent(scenario_toml), "application/toml")[1]

    def delete(self, name):
        self.request("DELETE", f"/api/v1/scenarios/{name}")

    def prepend_rule(self, name, rule):
        """Puts one rule (a dict with the TOML field names) first."""
        return self.request("POST", f"/api/v1/scenarios/{name}/rules",
                            json.dumps(rule), "application/json")[1]

    def wait_for_message(self, rcpt, timeout=10):
        """The newest accepted message to `rcpt`, waiting up to `timeout`
        seconds in one request: the server answers as soon as it is there."""
        query = urllib.parse.urlencode(
            {"rcpt": rcpt, "accepted": "true", "wait": f"{int(timeout * 1000)}ms"})
        try:
            _, page = self.request("GET", f"/api/v1/messages?{query}", timeout=timeout + 30)
        except ApiError as e:
            if e.status == 408:
                raise AssertionError(f"no message to {rcpt} within {timeout}s") from None
            raise
        return page["items"][0]

    def report(self):
        """The sender report and findings, as `mailfault report --json`."""
        return self.request("GET", "/api/v1/report")[1]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@dataclass
class Scenario:
    """A scenario a test put: send the test's mail to host:port."""
    api: MailfaultApi
    name: str
    host: str
    port: int


@pytest.fixture(scope="session")
def mailfault_api(tmp_path_factory):
    """One mailfault with its HTTP API for the whole run."""
    server = MailfaultApi(binary(), tmp_path_factory.mktemp("mailfault"))
    yield server
    server.stop()


@pytest.fixture
def scenario(mailfault_api, request):
    """`scenario(toml)` PUTs a scenario named after the test (a second call
    replaces it) and returns where to send; it is deleted after the test."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", request.node.name)[:64]
    put = []

    def load(scenario_toml):
        info = mailfault_api.put(name, scenario_toml)
        put.append(name)
        return Scenario(mailfault_api, name, "127.0.0.1", info["port"])

    yield load
    if put:
        mailfault_api.delete(name)


@pytest.fixture
def mailfault(tmp_path):
    """Starts mailfault servers for one test; stops them all after it."""
    factory = Factory(binary(), Path(tmp_path))
    yield factory
    for mf in factory.started:
        mf.stop()
