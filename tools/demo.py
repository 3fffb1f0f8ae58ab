#!/usr/bin/python3
"""make demo: the main job of Coffer, end to end, on a default local store.

1. start cofferd on BUILD/demo/data;
2. load sample data (strings and hashes) over the Redis protocol;
3. keep clients writing while a full backup and then an incremental backup
   are taken with `coffer backup`;
4. restore both sets into a new directory (`coffer restore`, which runs hard
   recovery), check it offline (`coffer check`);
5. start a second cofferd on the restored store and compare: every write
   acknowledged before the incremental backup began must be there;
6. print what it did, with the figures.

Only the standard library: the Redis protocol is spoken by hand below.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
COFFER = os.path.join(BUILD, "coffer")
COFFERD = os.path.join(BUILD, "cofferd")
DEMO = os.path.join(BUILD, "demo")
DATA = os.path.join(DEMO, "data")
RESTORED = os.path.join(DEMO, "restored")


def say(msg):
    print("\n== " + msg, flush=True)


class Redis:
    """A minimal RESP2 client over a Unix socket."""

    def __init__(self, path, timeout=30):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(path)
        self.f = self.s.makefile("rb")

    def cmd(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.s.sendall(b"".join(out))
        return self._read()

    def _read(self):
        line = self.f.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        t, rest = line[:1], line[1:-2]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise RuntimeError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            return data[:-2]
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise RuntimeError("unexpected reply %r" % line)

    def close(self):
        self.s.close()


def start_server(data, log):
    sock = os.path.join(data, "cofferd.sock")
    p = subprocess.Popen([COFFERD, "--data", data], stdout=log, stderr=log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise SystemExit("demo: cofferd exited with %d; see %s" % (p.returncode, log.name))
        try:
            r = Redis(sock)
            if r.cmd("PING") == "PONG":
                return p, r
        except OSError:
            time.sleep(0.05)
    p.kill()
    raise SystemExit("demo: cofferd did not answer within 30 s")


def stop_server(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        raise SystemExit("demo: cofferd did not stop within 60 s")
    if p.returncode != 0:
        raise SystemExit("demo: cofferd exited with %d" % p.returncode)


def run(*args, check=True):
    t0 = time.monotonic()
    p = subprocess.run(list(args), capture_output=True, text=True)
    dt = time.monotonic() - t0
    if p.stdout:
        sys.stdout.write(p.stdout)
    if p.stderr:
        sys.stdout.write(p.stderr)
    if check and p.returncode != 0:
        raise SystemExit("demo: %s failed with exit status %d" % (" ".join(args), p.returncode))
    return p, dt


class Writer(threading.Thread):
    """Writes w:<id>:<n> keys one at a time and remembers what was acknowledged."""

    def __init__(self, sock, wid):
        super().__init__(daemon=True)
        self.r = Redis(sock)
        self.wid = wid
        self.acked = 0
        self.stop = threading.Event()
        self.error = None

    def run(self):
        try:
            while not self.stop.is_set() and self.acked < 1000000:
                n = self.acked
                self.r.cmd("SET", "w:%d:%07d" % (self.wid, n), "value-%d-%d" % (self.wid, n))
                self.acked = n + 1
        except Exception as e:  # reported after the demo's checks
            self.error = e


def main():
    shutil.rmtree(DEMO, ignore_errors=True)
    os.makedirs(DEMO)
    log = open(os.path.join(DEMO, "cofferd.log"), "w")
    figures = {}

    say("start cofferd on a new store in %s" % DATA)
    srv, r = start_server(DATA, log)
    sock = os.path.join(DATA, "cofferd.sock")
    print("cofferd pid %d, socket %s" % (srv.pid, sock))

    say("load sample data: 20,000 strings and 2,000 hashes of 10 fields")
    t0 = time.monotonic()
    for i in range(0, 20000, 500):
        args = ["MSET"]
        for j in range(i, i + 500):
            args += ["user:%06d" % j, "name-%d-%s" % (j, "x" * (j % 50))]
        r.cmd(*args)
    for i in range(2000):
        args = ["HSET", "profile:%05d" % i]
        for f in range(10):
            args += ["field%d" % f, "v%d-%d" % (i, f)]
        r.cmd(*args)
    figures["load_s"] = time.monotonic() - t0
    print("loaded in %.2f s; DBSIZE = %s" % (figures["load_s"], r.cmd("DBSIZE")))

    say("keep 4 clients writing, and take a full backup")
    writers = [Writer(sock, i) for i in range(4)]
    for w in writers:
        w.start()
    time.sleep(0.5)
    full = os.path.join(DEMO, "full.cbk")
    _, figures["full_s"] = run(COFFER, "--server", "unix:" + sock, "backup", "--type", "full", "-o", full)

    say("more writes, then an incremental backup")
    time.sleep(1.0)
    before = [w.acked for w in writers]  # per writer, acknowledged before the incremental began
    acked_before_incr = sum(before)
    incr = os.path.join(DEMO, "incr.cbk")
    _, figures["incr_s"] = run(COFFER, "--server", "unix:" + sock, "backup", "--type", "incremental", "-o", incr)
    for w in writers:
        w.stop.set()
    for w in writers:
        w.join(timeout=30)
    errors = [w.error for w in writers if w.error]
    if errors:
        raise SystemExit("demo: a writer failed: %s" % errors[0])
    acked_total = sum(w.acked for w in writers)
    print("writes acknowledged: %d before the incremental began, %d in all" % (acked_before_incr, acked_total))

    say("verify and list the sets")
    run(COFFER, "verify", full, incr)
    run(COFFER, "list", incr)

    say("restore full + incremental into %s (hard recovery included)" % RESTORED)
    _, figures["restore_s"] = run(COFFER, "restore", full, incr, "--target", RESTORED)
    run(COFFER, "check", RESTORED)

    say("start a second cofferd on the restored store and compare")
    srv2, r2 = start_server(RESTORED, log)
    missing = 0
    for i in range(0, 20000, 997):
        if r2.cmd("GET", "user:%06d" % i) != ("name-%d-%s" % (i, "x" * (i % 50))).encode():
            missing += 1
    for i in range(0, 2000, 97):
        if r2.cmd("HGET", "profile:%05d" % i, "field3") != ("v%d-3" % i).encode():
            missing += 1
    present_writes = lost = 0
    for w, b in zip(writers, before):
        for n in range(w.acked):
            v = r2.cmd("GET", "w:%d:%07d" % (w.wid, n))
            if v is not None:
                present_writes += 1
                if v != ("value-%d-%d" % (w.wid, n)).encode():
                    missing += 1
            elif n < b:
                lost += 1
    restored_size = r2.cmd("DBSIZE")
    original_size = r.cmd("DBSIZE")
    stop_server(srv2)
    stop_server(srv)
    if missing:
        raise SystemExit("demo: %d sample values differ in the restored store" % missing)
    if lost:
        raise SystemExit("demo: %d of the %d writes acknowledged before the incremental backup "
                         "are missing from the restored store" % (lost, acked_before_incr))

    size = lambda p: sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(p) for f in fs) \
        if os.path.isdir(p) else os.path.getsize(p)
    say("what this demo did")
    print("""- started cofferd on a new store and loaded 20,000 strings and 2,000 hashes in %.2f s;
- kept 4 clients writing (%d writes acknowledged) while it took a full backup
  (%s, %d bytes, %.2f s) and an incremental backup (%s, %d bytes, %.2f s);
- verified both sets and restored them into a new directory, with hard
  recovery, in %.2f s; 'coffer check' found the restored store clean;
- started a second cofferd on it: DBSIZE %d (the original ended at %d);
  all sample values match, all %d writes acknowledged before the incremental
  backup began are there (%d lost), and %d of all %d acknowledged writes.""" % (
        figures["load_s"], acked_total, full, size(full), figures["full_s"], incr, size(incr),
        figures["incr_s"], figures["restore_s"], restored_size, original_size,
        acked_before_incr, lost, present_writes, acked_total))


if __name__ == "__main__":
    main()
