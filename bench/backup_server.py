#!/usr/bin/python3
"""backup_server.py - the server side of the online backup: CPU per GiB and
the cost to a durable write load (docs/benchmarks.md, "Online backup").

  backup_server.py load  --data DIR [--keys N]            fill a store (cofferd of --build)
  backup_server.py cpu   --data DIR [--reps 5] [-- BACKUP_ARGS...]
  backup_server.py under --data DIR [--reps 3] [-- BACKUP_ARGS...]

--build BUILD (default: build) names the cofferd and coffer binaries; a
cofferd is started on DIR (Unix socket DIR.sock) and stopped by its pid.

cpu: back-to-back full backups (--compress none, to standard output
discarded unless BACKUP_ARGS say otherwise); per backup, cofferd's CPU
seconds (utime+stime of the whole process from /proc/PID/stat: its other
threads are idle) and the client's (wait4 rusage), per GiB copied; medians.

under: durable SETs (redis-benchmark -t set -d 1000 -r 1000000 -P 1 -c 16
-n N, each SET a commit) alone, then while backups run back to back, REPS
times alternating; prints SET/s alone, with backups, the ratio of each pair
and its median, and the MB/s of the backups that ran entirely under load.
"""
import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time

TICK = os.sysconf("SC_CLK_TCK")
GEN = r'''import sys
n0, n = int(sys.argv[1]), int(sys.argv[2])
out = sys.stdout.buffer
pre = b"*3\r\n$3\r\nSET\r\n$16\r\n"
mid = b"\r\n$1000\r\n" + b"x" * 1000 + b"\r\n"
for b in range(n0, n0 + n, 4096):
    out.write(b"".join(pre + b"key:%012d" % i + mid for i in range(b, min(b + 4096, n0 + n))))'''


def start(build, data, extra):
    sock = data.rstrip("/") + ".sock"
    log = open(data.rstrip("/") + ".log", "w")
    p = subprocess.Popen([os.path.join(build, "cofferd"), "--data", data, "--listen", "unix:" + sock] + extra,
                         stdout=log, stderr=subprocess.STDOUT)
    end = time.monotonic() + 60
    while time.monotonic() < end:
        with open(log.name) as f:
            if "cofferd: started" in f.read():
                return p, sock
        if p.poll() is not None:
            break
        time.sleep(0.1)
    p.kill()
    sys.exit("cofferd did not start; see " + log.name)


def stop(p):
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=120)


def proc_cpu(pid):
    with open("/proc/%d/stat" % pid) as f:
        x = f.read().rsplit(")", 1)[1].split()
    return (int(x[11]) + int(x[12])) / TICK


def backup(build, sock, args):
    """One backup; returns (wall s, bytes, client CPU s)."""
    out = None
    cmd = [os.path.join(build, "coffer"), "--server", "unix:" + sock, "backup", "--compress", "none",
           "--quiet", "--json"] + args
    if "-o" not in args:
        cmd += ["-o", "-"]
        out = open(os.devnull, "wb")
    t = time.monotonic()
    p = subprocess.Popen(cmd, stdout=out or subprocess.PIPE, stderr=subprocess.PIPE)
    so = p.stdout.read() if out is None else b""
    se = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t
    if status != 0:
        sys.exit("backup failed: %s" % se.decode())
    j = json.loads((so or se).decode().strip().splitlines()[-1])
    if "-o" in args:
        os.unlink(args[args.index("-o") + 1])
    return wall, j["bytes"], ru.ru_utime + ru.ru_stime


def cmd_load(a):
    p, sock = start(a.build, a.data, [])
    try:
        g = subprocess.Popen([sys.executable, "-c", GEN, "0", str(a.keys)], stdout=subprocess.PIPE)
        r = subprocess.run(["redis-cli", "-s", sock, "--pipe"], stdin=g.stdout, capture_output=True, text=True)
        g.wait()
        print(r.stdout.strip().splitlines()[-1])
        backup(a.build, sock, [])  # truncates the load's log
    finally:
        stop(p)


def cmd_cpu(a):
    p, sock = start(a.build, a.data, a.server_args)
    rows = []
    try:
        backup(a.build, sock, a.rest)  # warm-up: page cache, first checkpoint
        for _ in range(a.reps):
            c0 = proc_cpu(p.pid)
            wall, nbytes, ccpu = backup(a.build, sock, a.rest)
            scpu = proc_cpu(p.pid) - c0
            gib = nbytes / (1 << 30)
            rows.append((wall, nbytes / wall / 1e6, scpu / gib, ccpu / gib))
            print("backup %.3f s %.0f MB/s  cofferd %.3f CPU-s/GiB  client %.3f CPU-s/GiB" % (
                wall, rows[-1][1], rows[-1][2], rows[-1][3]), flush=True)
    finally:
        stop(p)
    med = [statistics.median(r[i] for r in rows) for i in range(4)]
    print("median of %d: %.3f s, %.0f MB/s, cofferd %.3f CPU-s/GiB, client %.3f CPU-s/GiB; load %s" % (
        len(rows), med[0], med[1], med[2], med[3], open("/proc/loadavg").read().split()[:3]))


def sets(sock, n):
    r = subprocess.run(["redis-benchmark", "-s", sock, "-t", "set", "-d", "1000", "-r", "1000000", "-n", str(n),
                        "-P", "1", "-c", "16", "-q"], capture_output=True, text=True, timeout=1800)
    for tok in reversed(r.stdout.replace("\r", "\n").split("\n")):
        if tok.startswith("SET:") and "requests per second" in tok:
            return float(tok.split()[1])
    sys.exit("redis-benchmark: " + r.stdout + r.stderr)


def cmd_under(a):
    p, sock = start(a.build, a.data, a.server_args)
    ratios, alone, loaded, mbs = [], [], [], []
    try:
        backup(a.build, sock, a.rest)
        for rep in range(a.reps):
            s_alone = sets(sock, a.n)
            stop_flag = threading.Event()
            done = []

            def loop():
                while not stop_flag.is_set():
                    t0 = time.monotonic()
                    wall, nbytes, _ = backup(a.build, sock, a.rest)
                    done.append((t0, t0 + wall, nbytes))

            th = threading.Thread(target=loop)
            th.start()
            time.sleep(0.5)
            t_start = time.monotonic()
            s_load = sets(sock, a.n)
            t_end = time.monotonic()
            stop_flag.set()
            th.join()
            inside = [b / (e - s) / 1e6 for s, e, b in done if s >= t_start - 0.5 and e <= t_end]
            ratios.append(s_load / s_alone)
            alone.append(s_alone)
            loaded.append(s_load)
            mbs += inside
            print("rep %d: SET/s alone %.0f, with backups %.0f: kept %.2fx; backups inside: %s MB/s" % (
                rep + 1, s_alone, s_load, ratios[-1], " ".join("%.0f" % x for x in inside)), flush=True)
    finally:
        stop(p)
    print("median of %d: SET/s alone %.0f, with backups %.0f, kept %.2fx (ratios %s); backup under load "
          "%.0f MB/s (median of %d); load %s" % (
              len(ratios), statistics.median(alone), statistics.median(loaded), statistics.median(ratios),
              " ".join("%.2f" % r for r in ratios), statistics.median(mbs) if mbs else 0, len(mbs),
              open("/proc/loadavg").read().split()[:3]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["load", "cpu", "under"])
    ap.add_argument("--data", required=True)
    ap.add_argument("--build", default="build")
    ap.add_argument("--keys", type=int, default=1000000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--n", type=int, default=100000, help="SETs per redis-benchmark run")
    ap.add_argument("--server-arg", dest="server_args", action="append", default=[])
    argv = sys.argv[1:]
    rest = argv[argv.index("--") + 1:] if "--" in argv else []
    a = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    a.rest = rest
    {"load": cmd_load, "cpu": cmd_cpu, "under": cmd_under}[a.mode](a)


if __name__ == "__main__":
    main()
