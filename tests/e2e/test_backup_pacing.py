"""Pacing and priority of the online backup (docs/design.md, section 10.5):
the rate limit (coffer backup --rate, cofferd backup-rate-limit; the tighter
applies) really limits, the server's data thread and the client run at a
low priority by default (nice read from /proc), and bad values are refused
with the option named."""
import json
import os
import shutil
import subprocess
import threading
import time

import pytest

from server_util import SLOW, Resp, Server, short_dir

BURST_S = 0.1  # SRV_BACKUP_BURST_MS: the most credit the token bucket holds
LOW_NICE = 10  # SRV_BACKUP_NICE and CF_BKP_CLIENT_NICE


@pytest.fixture
def work():
    d = short_dir("cpc")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def fill(s, mib):
    """About MIB MiB of values (pages), through pipelined SETs."""
    r = s.redis()
    p = r.pipeline(transaction=False)
    v = b"v" * 4000
    for i in range(mib * 256):
        p.set("key:%08d" % i, v)
        if i % 500 == 499:
            p.execute()
    p.execute()


def run_backup(coffer_bin, sock, out, extra=()):
    t0 = time.monotonic()
    p = subprocess.run([coffer_bin, "--server", "unix:" + sock, "backup", "--compress", "none", "--json",
                        "-o", out] + list(extra), capture_output=True, text=True, timeout=300 * SLOW)
    wall = time.monotonic() - t0
    assert p.returncode == 0, p.stderr
    os.unlink(out)
    return json.loads(p.stdout), wall


def nice_of(pid, tid=None):
    path = "/proc/%d/task/%d/stat" % (pid, tid) if tid else "/proc/%d/stat" % pid
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[16])  # field 19 of stat: nice


def backup_threads(pid):
    """(tid, nice) of cofferd's backup data threads alive now."""
    out = []
    for t in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/comm" % (pid, t)) as f:
                if f.read().strip() == "cf-backup":
                    out.append((int(t), nice_of(pid, int(t))))
        except (FileNotFoundError, ProcessLookupError):
            pass  # the thread ended meanwhile
    return out


@pytest.mark.parametrize("where", ["client", "server", "both"])
def test_rate_limit_limits(coffer_bin, cofferd_bin, work, where):
    """A backup of N bytes at R MiB/s takes at least N/R - the bucket's burst;
    with both limits set the tighter one (the server's 4 here) applies."""
    rate = 8.0
    args = ["--backup-rate-limit", str(rate)] if where in ("server", "both") else []
    s = Server(cofferd_bin, os.path.join(work, "d"), sock=os.path.join(work, "s.sock"), args=args)
    try:
        fill(s, 4)  # + the log generation (16 MiB): about 22 MiB, 2.7 s at 8 MiB/s
        extra = ["--rate", str(rate)] if where == "client" else (["--rate", "100"] if where == "both" else [])
        summary, wall = run_backup(coffer_bin, s.sock, os.path.join(work, "a.cbk"), extra)
        floor = summary["bytes"] / (rate * 1048576) - BURST_S
        print("rate %s: %d bytes in %.2f s (client %.2f s); floor %.2f s" % (
            where, summary["bytes"], wall, summary["seconds"], floor))
        assert summary["bytes"] > 16 << 20
        assert wall >= floor, "%d bytes at %.1f MiB/s took only %.2f s" % (summary["bytes"], rate, wall)
        # ... and it is pacing, not stalling: well under twice the floor plus slack
        assert wall < 2 * floor + 10 * SLOW
        # Without a limit the same backup is much faster than the floor (a
        # control: the floor above is not what it always takes).
        if where == "client":
            _, fast = run_backup(coffer_bin, s.sock, os.path.join(work, "b.cbk"), ["--priority", "normal"])
            print("unlimited: %.2f s" % fast)
            assert fast < floor or SLOW > 1
    finally:
        assert s.stop() == 0


@pytest.mark.parametrize("setting", ["default", "normal"])
def test_priority_of_data_thread_and_client(coffer_bin, cofferd_bin, work, setting):
    """cofferd's backup data thread runs at nice 10 by default and at the
    server's own nice with backup-priority normal; the client at nice 10
    unless --priority normal. The backup is slowed by a rate limit so that
    both can be seen while it runs."""
    args = ["--backup-priority", "normal"] if setting == "normal" else []
    s = Server(cofferd_bin, os.path.join(work, "d"), sock=os.path.join(work, "s.sock"), args=args)
    try:
        fill(s, 1)
        base = nice_of(s.pid)
        extra = ["--rate", "4"] + (["--priority", "normal"] if setting == "normal" else [])
        p = subprocess.Popen([coffer_bin, "--server", "unix:" + s.sock, "backup", "--compress", "none",
                              "--json", "-o", os.path.join(work, "p.cbk")] + extra,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seen, client_nice = [], None
        end = time.monotonic() + 30 * SLOW
        while time.monotonic() < end and p.poll() is None and not (seen and client_nice is not None):
            seen = seen or backup_threads(s.pid)
            try:
                client_nice = nice_of(p.pid)
            except FileNotFoundError:
                pass
            time.sleep(0.02)
        out, err = p.communicate(timeout=120 * SLOW)
        assert p.returncode == 0, err
        assert seen, "no cf-backup thread seen in cofferd while the backup ran"
        # Lowered to nice 10 (an absolute value, never a raise): a server or a
        # client already nicer than that keeps its own.
        want = max(base, LOW_NICE) if setting == "default" else base
        assert all(n == want for _, n in seen), (seen, base)
        mine = os.nice(0)  # what the client inherits from this test
        assert client_nice == (max(mine, LOW_NICE) if setting == "default" else mine), (client_nice, mine)
        # the session's other work (begin, roll, end) stays at cofferd's own
        assert nice_of(s.pid) == base
    finally:
        assert s.stop() == 0


def test_bad_values_are_refused(coffer_bin, cofferd_bin, work):
    for bad in ["0", "-3", "fast", "0.01"]:
        p = subprocess.run([coffer_bin, "--server", "unix:/nonexistent", "backup", "--rate", bad, "-o",
                            os.path.join(work, "x.cbk")], capture_output=True, text=True, timeout=30)
        assert p.returncode != 0 and "--rate" in p.stderr, (bad, p.stderr)
    p = subprocess.run([coffer_bin, "--server", "unix:/nonexistent", "backup", "--priority", "high", "-o",
                        os.path.join(work, "x.cbk")], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and "--priority" in p.stderr, p.stderr
    for key, val in [("--backup-rate-limit", "x"), ("--backup-rate-limit", "0.01"), ("--backup-priority", "idle")]:
        p = subprocess.run([cofferd_bin, "--data", os.path.join(work, "n"), key, val], capture_output=True,
                           text=True, timeout=30)
        assert p.returncode != 0 and key[2:] in p.stderr, (key, val, p.stderr)
    # The protocol itself: RATE below the floor, or not a number.
    s = Server(cofferd_bin, os.path.join(work, "d"), sock=os.path.join(work, "s.sock"))
    try:
        for val in ["100", "abc"]:
            c = Resp(s.sock)
            rep = c.cmd("COFFER.BACKUP", "1", "full", "RATE", val)
            c.close()
            assert rep.startswith("ERR") and "RATE" in rep and "COFFER_E_INVALID_ARGUMENT" in rep, rep
    finally:
        assert s.stop() == 0
