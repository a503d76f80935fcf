#!/usr/bin/env python3
"""Holds N idle SMTP sessions open on one server, for measuring memory per
idle session. Opens them at most BATCH at a time, waits for each greeting,
prints "held N" when all are open, then keeps them until stdin closes or
LIMIT seconds pass. Loopback only.

    python3 bench/hold.py PORT N [LIMIT]
"""
import selectors
import socket
import sys
import time

BATCH = 200  # handshakes in flight: stays under any listen backlog


def main():
    port, n = int(sys.argv[1]), int(sys.argv[2])
    limit = float(sys.argv[3]) if len(sys.argv) > 3 else 120.0
    deadline = time.monotonic() + limit
    sel = selectors.DefaultSelector()
    held, pending, greeted, failed = [], 0, 0, 0
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
                if s.recv(4096).startswith(b"220"):
                    greeted += 1
                else:
                    failed += 1
            except OSError:
                failed += 1
    print(f"held {greeted} failed {failed}", flush=True)
    sel.close()
    while time.monotonic() < deadline:
        r = sys.stdin.readline()
        if r == "":
            break
    for s in held:
        s.close()


if __name__ == "__main__":
    main()
