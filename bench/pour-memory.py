"""bench/pour-memory.py BINARY BUDGET CLIENTS MB: N clients pour M MB of DATA each at once into a mailfault; prints the
server's peak RSS (VmHWM) and the replies."""
import socket, subprocess, sys, threading, time

binary, budget, n, mb = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
srv = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1:0", "--no-watch",
                        "--max-message-memory", budget],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
line = srv.stdout.readline()
port = int(line.split("smtp://127.0.0.1:")[1].split()[0])
def rss(key):
    for l in open(f"/proc/{srv.pid}/status"):
        if l.startswith(key):
            return int(l.split()[1]) // 1024
base = rss("VmRSS:")
barrier = threading.Barrier(n)
replies = []
def client():
    s = socket.create_connection(("127.0.0.1", port))
    f = s.makefile("rb")
    def cmd(c):
        s.sendall(c + b"\r\n")
        while True:
            l = f.readline()
            if l[3:4] != b"-":
                return l.decode().strip()
    f.readline()
    cmd(b"EHLO c.test"); cmd(b"MAIL FROM:<a@b.test>"); cmd(b"RCPT TO:<c@d.test>"); cmd(b"DATA")
    chunk = (b"x" * 998 + b"\r\n") * 1000
    for _ in range(mb):
        s.sendall(chunk)
    barrier.wait()
    replies.append(cmd(b"."))
    replies.append(cmd(b"RSET"))
    s.close()
t0 = time.time()
ts = [threading.Thread(target=client) for _ in range(n)]
for t in ts: t.start()
for t in ts: t.join()
peak = rss("VmHWM:")
srv.terminate(); srv.wait()
from collections import Counter
print(f"budget={budget} clients={n} x {mb} MB: RSS at start {base} MiB, peak {peak} MiB, {time.time()-t0:.1f}s")
for r, c in Counter(r[:40] for r in replies).items():
    print(f"  {c} x {r}")
