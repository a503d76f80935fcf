#!/usr/bin/env python3
"""Holds N idle SMTP sessions open on one server, for measuring memory per
idle session. Opens them at most BATCH at a time, waits for each greeting,
prints "held N" when all are open, then keeps them until stdin closes or
LIMIT seconds pass. Loopback only.

    python3 bench/hold.py PORT N [LIMIT] [--starttls]

With --starttls each session says EHLO and STARTTLS and completes the TLS
handshake (the certificate is not checked) before it idles: what an idle
TLS session costs.
"""
import selectors
import socket
import ssl
import sys
import time

BATCH = 200  # handshakes in flight: stays under any listen backlog


def starttls(s, ctx):
    """EHLO, STARTTLS, handshake; blocking with a timeout. True when done."""
    s.setblocking(True)
    s.settimeout(10)
    try:
        f = s.makefile("rb")
        s.sendall(b"EHLO hold.test\r\n")
        line = f.readline()
        while line[3:4] == b"-":
            line = f.readline()
        s.sendall(b"STARTTLS\r\n")
        if not f.readline().startswith(b"220"):
            return None
        return ctx.wrap_socket(s, server_hostname="mailfault.test")
    except OSError:
        return None


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    tls = "--starttls" in sys.argv
    port, n = int(args[0]), int(args[1])
    limit = float(args[2]) if len(args) > 2 else 120.0
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + limit
    sel = selectors.DefaultSelector()
    held, wrapped, pending, greeted, failed = [], [], 0, 0, 0
    while greeted + failed < n and time.monotonic() < deadline:
        while pending < BATCH and len(held) < n:
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            sel.register(s, selectors.EVENT_READ)
            held.append(s)
            pending += 1
        for key, _ in sel.select(timeout=1.0):
            s = key.fileobj
            sel.unregister(s)
            pending -= 1
            try:
                if not s.recv(4096).startswith(b"220"):
                    failed += 1
                elif tls:
                    t = starttls(s, ctx)
                    if t is None:
                        failed += 1
                    else:
                        wrapped.append(t)
                        greeted += 1
                else:
                    greeted += 1
            except OSError:
                failed += 1
    print(f"held {greeted} failed {failed}", flush=True)
    sel.close()
    while time.monotonic() < deadline:
        r = sys.stdin.readline()
        if r == "":
            break
    for s in wrapped + held:
        s.close()


if __name__ == "__main__":
    main()
