"""Online backup and restore end to end: cofferd serving writes while
`coffer backup` takes sets, `coffer restore` lays them down and recovers,
and a second cofferd serves the result."""
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from server_util import SLOW, Resp, Server, deadline, short_dir


@pytest.fixture
def work():
    d = short_dir("cbk")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def server(cofferd_bin, work):
    s = Server(cofferd_bin, os.path.join(work, "data"), sock=os.path.join(work, "s.sock"))
    yield s
    s.close()


def coffer(coffer_bin, *args, sock=None, timeout=120, env=None):
    cmd = [coffer_bin]
    if sock:
        cmd += ["--server", "unix:" + sock]
    p = subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True,
                       timeout=timeout * SLOW, env=env)
    return p


def ok(p):
    assert p.returncode == 0, "exit %d\nstdout:\n%s\nstderr:\n%s" % (p.returncode, p.stdout, p.stderr)
    return p


class Writer(threading.Thread):
    """SETs w<id>:<n> one by one; acked = how many returned OK."""

    def __init__(self, server, wid):
        super().__init__(daemon=True)
        self.r = server.redis()
        self.wid, self.acked, self.error = wid, 0, None
        self.stop = threading.Event()

    def run(self):
        try:
            while not self.stop.is_set() and self.acked < 200000:
                self.r.set("w%d:%07d" % (self.wid, self.acked), "v" * 64)
                self.acked += 1
        except Exception as e:
            self.error = e


def load(server, n=5000, prefix="k"):
    r = server.redis()
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.set("%s%06d" % (prefix, i), ("value-%d-" % i) * 4)
    pipe.execute()
    r.hset("h", mapping={"f%d" % i: "x%d" % i for i in range(100)})


def test_full_backup_under_writes_restores_everything_acknowledged(coffer_bin, cofferd_bin, server, work):
    load(server)
    writers = [Writer(server, i) for i in range(3)]
    for w in writers:
        w.start()
    end = deadline(20)
    while sum(w.acked for w in writers) < 300 and time.monotonic() < end:
        time.sleep(0.01)
    before = [w.acked for w in writers]
    out = os.path.join(work, "full.cbk")
    p = ok(coffer(coffer_bin, "backup", "--type", "full", "-o", out, "--json", sock=server.sock))
    summary = json.loads(p.stdout)
    assert summary["type"] == "full" and summary["pages"] > 0
    for w in writers:
        w.stop.set()
    for w in writers:
        w.join(30 * SLOW)
        assert w.error is None, w.error
    assert os.stat(out).st_mode & 0o777 == 0o600
    ok(coffer(coffer_bin, "verify", out))
    target = os.path.join(work, "restored")
    ok(coffer(coffer_bin, "restore", out, "--target", target))
    ok(coffer(coffer_bin, "check", target))
    s2 = Server(cofferd_bin, target, sock=os.path.join(work, "r.sock"))
    try:
        r2 = s2.redis()
        assert r2.get("k000123") == ("value-123-" * 4).encode()
        assert r2.hget("h", "f42") == b"x42"
        for w, b in zip(writers, before):
            for n in range(b):
                assert r2.get("w%d:%07d" % (w.wid, n)) is not None, "acknowledged write lost"
        # nothing that was never written
        assert r2.get("w0:%07d" % (writers[0].acked + 5)) is None
    finally:
        s2.stop()


def test_chain_full_incremental_incremental_and_truncation(coffer_bin, cofferd_bin, server, work):
    load(server, 2000, "a")
    sets = []
    for i, kind in enumerate(["full", "incremental", "incremental"]):
        load(server, 1000, "b%d_" % i)
        out = os.path.join(work, "%d-%s.cbk" % (i, kind))
        ok(coffer(coffer_bin, "backup", "--type", kind, "-o", out, sock=server.sock))
        sets.append(out)
        logs = sorted(os.listdir(os.path.join(server.data, "log")))
        listing = ok(coffer(coffer_bin, "list", out)).stdout
        assert kind in listing
    # the logs up to the last roll were truncated: only the current generation(s) remain
    last = ok(coffer(coffer_bin, "list", sets[-1])).stdout
    ok(coffer(coffer_bin, "verify", *sets))
    target = os.path.join(work, "chain")
    ok(coffer(coffer_bin, "restore", *sets, "--target", target))
    s2 = Server(cofferd_bin, target, sock=os.path.join(work, "c.sock"))
    try:
        r2 = s2.redis()
        assert r2.dbsize() == server.redis().dbsize()
        assert r2.get("b2_000999") is not None
    finally:
        s2.stop()
    # wrong order and gaps are refused
    p = coffer(coffer_bin, "restore", sets[0], sets[2], "--target", os.path.join(work, "gap"))
    assert p.returncode != 0 and "COFFER_E_CHAIN_BROKEN" in p.stderr, p.stderr
    assert logs  # the store's own log directory is never empty


def test_differential_and_copy(coffer_bin, cofferd_bin, server, work):
    load(server, 1000, "d")
    full = os.path.join(work, "f.cbk")
    ok(coffer(coffer_bin, "backup", "-o", full, sock=server.sock))
    before = ok(coffer(coffer_bin, "dump", "header", server.data)).stdout
    copy = os.path.join(work, "copy")
    ok(coffer(coffer_bin, "backup", "--type", "copy", "--format", "dir", "-o", copy, sock=server.sock))
    after = ok(coffer(coffer_bin, "dump", "header", server.data)).stdout
    hist = lambda t: [l for l in t.splitlines() if l.strip().startswith("last ")]
    assert hist(before) == hist(after), "a copy backup changed the history"
    load(server, 500, "e")
    diff = os.path.join(work, "d.cbk")
    ok(coffer(coffer_bin, "backup", "--type", "differential", "--compress", "none", "-o", diff,
              sock=server.sock))
    target = os.path.join(work, "fd")
    ok(coffer(coffer_bin, "restore", full, diff, "--target", target))
    s2 = Server(cofferd_bin, target, sock=os.path.join(work, "d.sock"))
    try:
        assert s2.redis().get("e000499") is not None
    finally:
        s2.stop()
    # the copy set (a directory) restores on its own
    t2 = os.path.join(work, "fromcopy")
    ok(coffer(coffer_bin, "restore", copy, "--target", t2))
    ok(coffer(coffer_bin, "check", t2))


def test_backup_to_stdout(coffer_bin, server, work):
    load(server, 500, "s")
    out = os.path.join(work, "piped.cbk")
    with open(out, "wb") as f:
        p = subprocess.run([coffer_bin, "--server", "unix:" + server.sock, "backup", "-o", "-", "--quiet"],
                           stdout=f, stderr=subprocess.PIPE, timeout=120 * SLOW)
    assert p.returncode == 0, p.stderr
    ok(coffer(coffer_bin, "verify", out))


def test_second_backup_refused_and_vanished_client_aborts(coffer_bin, server, work):
    load(server, 200, "v")
    c = Resp(server.sock)
    c.send(b"*3\r\n$13\r\nCOFFER.BACKUP\r\n$1\r\n1\r\n$4\r\nfull\r\n")
    assert c.reply() == "COFFER-BACKUP 1"
    # the first backup now waits for our confirmation: a second one is refused
    p = coffer(coffer_bin, "backup", "-o", os.path.join(work, "x.cbk"), sock=server.sock)
    assert p.returncode == 150, p.stderr  # COFFER_E_BACKUP_IN_PROGRESS
    assert "is still running" in p.stderr and "(COFFER_E_BACKUP_IN_PROGRESS)" in p.stderr
    assert not os.path.exists(os.path.join(work, "x.cbk"))
    c.close()
    # the server notices the vanished client, aborts, and the next backup works
    end = deadline(30)
    while True:
        p = coffer(coffer_bin, "backup", "-o", os.path.join(work, "y.cbk"), sock=server.sock)
        if p.returncode == 0 or time.monotonic() > end:
            break
        time.sleep(0.1)
    ok(p)
    ev = ok(coffer(coffer_bin, "events", "--data", server.data, "--id", "1203")).stdout
    assert "backup aborted" in ev or "1203" in ev


def test_point_in_time_restore(coffer_bin, server, work):
    r = server.redis()
    r.set("pit", "0")
    full = os.path.join(work, "pf.cbk")
    ok(coffer(coffer_bin, "backup", "-o", full, sock=server.sock))
    marks = []
    for i in range(1, 4):
        r.set("pit", str(i))
        time.sleep(0.05)
        marks.append(time.time())
        time.sleep(0.05)
    inc = os.path.join(work, "pi.cbk")
    ok(coffer(coffer_bin, "backup", "--type", "incremental", "-o", inc, sock=server.sock))
    for i, t in enumerate(marks, start=1):
        target = os.path.join(work, "pit%d" % i)
        until = "@%.6f" % t
        ok(coffer(coffer_bin, "restore", full, inc, "--target", target, "--until", until))
        s2 = Server(server.cofferd, target, sock=os.path.join(work, "p%d.sock" % i))
        try:
            assert s2.redis().get("pit") == str(i).encode()
        finally:
            s2.stop()


def test_restore_refusals(coffer_bin, server, work):
    full = os.path.join(work, "rf.cbk")
    ok(coffer(coffer_bin, "backup", "-o", full, sock=server.sock))
    p = coffer(coffer_bin, "restore", full, "--target", server.data)
    assert p.returncode != 0
    assert "COFFER_E_DIR_NOT_EMPTY" in p.stderr or "COFFER_E_LOCKED" in p.stderr or \
        "COFFER_E_SERVER_RUNNING" in p.stderr, p.stderr
    t = os.path.join(work, "nr")
    ok(coffer(coffer_bin, "restore", full, "--target", t, "--no-recover"))
    # cofferd refuses a store that was not recovered, naming the remedy
    s2 = Server(server.cofferd, t, sock=os.path.join(work, "nr.sock"), start=False)
    s2.proc = subprocess.Popen(s2.command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = s2.proc.communicate(timeout=30 * SLOW)
    assert s2.proc.returncode == 47, err  # COFFER_E_NEEDS_HARD_RECOVERY
    assert b"coffer recover" in err
    ok(coffer(coffer_bin, "recover", t))
    ok(coffer(coffer_bin, "check", t))


def test_bad_page_fails_backup_and_store_keeps_serving(coffer_bin, server, work):
    load(server, 3000, "p")
    server.stop()  # clean stop: every page is in the file
    db = os.path.join(server.data, "coffer.db")
    with open(db, "r+b") as f:
        f.seek(5 * 8192 + 1000)
        f.write(b"\xde\xad\xbe\xef")
    server.start()
    out = os.path.join(work, "bad.cbk")
    p = coffer(coffer_bin, "backup", "-o", out, sock=server.sock)
    assert p.returncode == 40, p.stderr  # COFFER_E_PAGE_CHECKSUM
    assert "page 5" in p.stderr and "(COFFER_E_PAGE_CHECKSUM)" in p.stderr
    assert not os.path.exists(out)
    assert server.redis().ping()  # the server is up; pages other than 5 still serve
    ev = ok(coffer(coffer_bin, "events", "--data", server.data, "--id", "1100")).stdout
    assert "page 5" in ev


def test_json_summary_of_an_odd_set_name(coffer_bin, server, work):
    """--json stays JSON whatever the set's path holds: quotes, a backslash,
    a tab and non-UTF-8 bytes are escaped (U+FFFD for the latter)."""
    load(server, 100, "j")
    name = 'odd "name" \\ with\ttab \xff.cbk'
    out = os.path.join(work, name)
    p = subprocess.run([coffer_bin, "--server", "unix:" + server.sock, "backup", "-o",
                        os.fsencode(out.replace("\xff", "")) + b"\xff", "--json"],
                       capture_output=True, timeout=120 * SLOW)
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    assert summary["set"] == out.replace("\xff", "") + "\ufffd", summary
    assert summary["outcome"] == "confirmed" and summary["type"] == "full", summary
