"""Every failure of the backup path explains itself (KB Q245664's lesson:
the operator saw only "check the event log" and the event log a bare hex
code, c7ff000d).

One table-driven test injects each failure and asserts both sides:

* the client (`coffer backup`, or a raw RESP client where the real client
  cannot produce the failure): exit status = the catalog code, one line
  `coffer: error: MESSAGE (COFFER_E_NAME)` whose message says what failed,
  the object it failed on (socket path, uid, page, generation, file...)
  named in the error or detail lines, a `coffer: hint:` line saying what to
  do - and never a bare hex code or "see the event log" for a message;
* the server: the event ID and its fields (`coffer events --data DIR --id N
  --json`), matched to this very client by its pid where the event names it.

Failures whose server cannot log anything (none is running; it was killed)
say so in their row (`no_event`) and check what can be checked instead.

Mid-stream cases hold the backup in the middle of the page stream without
any timing guess: the client writes the set to a pipe (`-o -`) that the test
does not read until the failure is injected, so the client stops reading
the connection and the server blocks in the middle of `coffer.db`.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from server_util import (SLOW, DropEndProxy, FakeBackupServer, Resp, RespError, Server, deadline, read_frame,
                         short_dir)

ROOT = os.geteuid() == 0
UID = os.geteuid()
PAGE_SIZE = 8192          # the store's page size (as in test_backup.py)
BIG_KEYS = 8000           # x 4 KiB values: a ~60 MiB coffer.db, far more than
                          # the pipe and socket buffers a stalled backup fills


# ---------------------------------------------------------------- context


class Ctx:
    """One case's world: a short work directory, the servers, client
    processes, mounts and threads it made - all undone at the end, by pid
    and by path, also after a failure."""

    def __init__(self, coffer_bin, cofferd_bin):
        self.coffer_bin, self.cofferd_bin = coffer_bin, cofferd_bin
        self.work = short_dir("cbf")
        os.chmod(self.work, 0o755)
        self.servers, self.procs, self.mounts, self.threads, self.conns = [], [], [], [], []
        self.server = None
        self.sock = None
        self.vars = {"work": self.work, "uid": UID}

    # -- servers
    def start_server(self, name="s", args=(), env=None):
        s = Server(self.cofferd_bin, os.path.join(self.work, name + "-data"),
                   sock=os.path.join(self.work, name + ".sock"), args=list(args), env=env)
        self.servers.append(s)
        self.server, self.sock = s, s.sock
        self.vars.update(sock=s.sock, data=s.data)
        return s

    def load_big(self, n=BIG_KEYS):
        p = subprocess.run(["redis-benchmark", "-s", self.sock, "-t", "set", "-d", "4096", "-r", "1000000",
                            "-n", str(n), "-P", "32", "-q"], capture_output=True, text=True,
                           timeout=300 * SLOW)
        assert p.returncode == 0, p.stderr
        # ~n distinct keys of 4 KiB: the backup streams at least n * 4 KiB of pages
        assert self.server.redis().dbsize() > n * 0.9

    def load_small(self, n=3000, prefix="k"):
        r = self.server.redis()
        pipe = r.pipeline(transaction=False)
        for i in range(n):
            pipe.set("%s%06d" % (prefix, i), ("value-%d-" % i) * 4)
        pipe.execute()

    # -- the client
    def argv(self, *args, server=None):
        return [self.coffer_bin, "--server", server or "unix:" + self.sock] + [str(a) for a in args]

    def run(self, *args, server=None, wrap=(), timeout=120):
        """Run coffer to completion; returns (exit status, stdout, stderr, pid)."""
        p = subprocess.Popen(list(wrap) + self.argv(*args, server=server), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        self.procs.append(p)
        try:
            out, err = p.communicate(timeout=timeout * SLOW)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate(timeout=30)
            raise AssertionError("coffer %s hung (> %ss):\n%s" % (" ".join(map(str, args)), timeout * SLOW, err))
        return p.returncode, out, err, p.pid

    def stalled_backup(self):
        """Start `coffer backup -o -` into a pipe nobody reads yet, and wait
        until the server logged its start: the backup is then held in the
        middle of the page stream. Returns the Popen (pid = WHO's pid)."""
        p = subprocess.Popen(self.argv("backup", "--compress", "none", "-o", "-"), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.procs.append(p)
        wait_event(self, 1200, {"WHO": has_pid(p.pid)}, seconds=30)
        time.sleep(0.2 * SLOW)  # let pipe and socket buffers fill: the server now blocks in a send
        return p

    def drain(self, p, timeout=60):
        """Read the stalled client's output away until it exits; returns
        (exit status, stderr)."""
        sink = {"n": 0}

        def pump():
            while True:
                b = p.stdout.read(1 << 20)
                if not b:
                    return
                sink["n"] += len(b)

        t = threading.Thread(target=pump, daemon=True)
        t.start()
        self.threads.append(t)
        try:
            rc = p.wait(timeout=timeout * SLOW)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=30)
            raise AssertionError("coffer backup did not end within %ss after the failure" % (timeout * SLOW))
        t.join(30)
        return rc, p.stderr.read().decode(errors="replace")

    # -- other resources
    def mount_tmpfs(self, path, size):
        os.makedirs(path, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size, "cftest", path],
                       check=True, capture_output=True, timeout=60)
        self.mounts.append(path)
        return path

    def close(self):
        problems = []
        for r in self.conns:
            r.close()
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    problems.append("client pid %d did not die" % p.pid)
            for f in (p.stdout, p.stderr):
                if f:
                    f.close()
        for t in self.threads:
            t.join(10)
        for s in self.servers:
            if s.alive():
                rc = s.stop()
                if rc != 0:
                    problems.append("cofferd exit status %s at SIGTERM after the case:\n%s" % (rc, s.log()))
        for m in reversed(self.mounts):
            if subprocess.run(["umount", m], capture_output=True, timeout=60).returncode != 0:
                subprocess.run(["umount", "-l", m], capture_output=True, timeout=60)
        shutil.rmtree(self.work, ignore_errors=True)
        return problems


@pytest.fixture
def ctx(coffer_bin, cofferd_bin):
    c = Ctx(coffer_bin, cofferd_bin)
    try:
        yield c
    finally:
        problems = c.close()
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------- events


def all_events(c, data, event_id=None):
    cmd = [c.coffer_bin, "events", "--data", data, "--json"]
    if event_id is not None:
        cmd += ["--id", str(event_id)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60 * SLOW)
    assert p.returncode == 0, p.stderr
    return [json.loads(line) for line in p.stdout.splitlines() if line.strip()]


def has_pid(pid):
    m = lambda v: re.search(r"\bpid %d\b" % pid, v) is not None
    m.__name__ = "names pid %d" % pid
    return m


def one_of(*values):
    m = lambda v: v in values
    m.__name__ = "one of %s" % (values,)
    return m


def matches(ev, fields):
    """Every expected field matches; a key "A|B" is met by field A or B."""
    f = ev.get("fields", {})

    def one(k, want):
        if k not in f:
            return False
        return want(f[k]) if callable(want) else f[k] == str(want)

    return all(any(one(k, want) for k in key.split("|")) for key, want in fields.items())


def wait_event(c, event_id, fields, seconds=5, after_seq=0, data=None):
    """The first event EVENT_ID (seq > AFTER_SEQ) whose fields match, within
    SECONDS; a clear failure listing what was logged otherwise."""
    data = data or c.server.data
    end = deadline(seconds)
    while True:
        evs = [e for e in all_events(c, data, event_id) if e["seq"] > after_seq]
        for e in evs:
            if matches(e, fields):
                return e
        if time.monotonic() > end:
            want = {k: getattr(v, "__name__", v) for k, v in fields.items()}
            raise AssertionError(
                "no event %d with %s in %s; events %d logged: %s\nall events since seq %d:\n%s"
                % (event_id, want, data, event_id, json.dumps(evs, indent=1), after_seq,
                   "\n".join(json.dumps(e) for e in all_events(c, data) if e["seq"] > after_seq)))
        time.sleep(0.05)


def last_seq(c, data=None):
    evs = all_events(c, data or c.server.data)
    return max((e["seq"] for e in evs), default=0)


# ---------------------------------------------------------------- client message checks

HEXISH = re.compile(r"\b(0x)?[0-9a-fA-F]{6,}\b")


def check_message(case, out, v):
    """The client's report: exit status, one named error line that says what
    failed, the object named, a hint, no bare hex code, no 'see the event log'."""
    rc, err = out["rc"], out["stderr"]
    name = case["name"]
    ctx_text = "exit %s\nstderr:\n%s" % (rc, err)
    assert rc == case["code"], "expected exit %d (%s); %s" % (case["code"], name, ctx_text)
    errors = [l for l in err.splitlines() if l.startswith("coffer: error: ")]
    assert len(errors) == 1, "expected one 'coffer: error:' line; %s" % ctx_text
    line = errors[0]
    assert line.endswith("(%s)" % name), "the error line does not end with (%s): %r" % (name, line)
    msg = line[len("coffer: error: "):-len(" (%s)" % name)]
    check_not_bare(msg, ctx_text)
    for phrase in case.get("what", []):
        phrase = phrase.format(**v)
        assert phrase in msg, "the error message does not say %r: %r" % (phrase, msg)
    for phrase in case.get("object", []):
        phrase = phrase.format(**v)
        assert phrase in err, "stderr does not name %r; %s" % (phrase, ctx_text)
    hints = [l for l in err.splitlines() if l.startswith("coffer: hint: ")]
    assert len(hints) == 1, "expected one 'coffer: hint:' line; %s" % ctx_text
    hint = hints[0][len("coffer: hint: "):]
    assert len(re.findall(r"[A-Za-z]{3,}", hint)) >= 5, "the hint says nothing to do: %r" % hint
    assert "coffer explain %s" % name in hint, "the hint does not point at the catalog entry: %r" % hint


def check_not_bare(msg, ctx_text):
    low = msg.lower()
    assert "event log" not in low, "the message sends the operator to the event log: %r; %s" % (msg, ctx_text)
    words = re.findall(r"[A-Za-z]{3,}", HEXISH.sub(" ", msg))
    assert len(words) >= 4, "the message is a bare code, not a sentence: %r; %s" % (msg, ctx_text)
    assert not re.fullmatch(r"[\s0-9a-fA-Fx:'()-]*", msg), "bare hex message %r" % msg


def check_reply(case, reply, v):
    """A RESP error answered to a raw client: code word, named, says what."""
    assert isinstance(reply, RespError), "expected an error reply, got %r" % (reply,)
    assert reply.endswith("(%s)" % case["name"]), reply
    msg = reply.split(" ", 1)[1] if " " in reply else reply
    check_not_bare(msg[:-len(" (%s)" % case["name"])], "reply: %r" % reply)
    for phrase in case.get("what", []):
        assert phrase.format(**v) in reply, "the reply does not say %r: %r" % (phrase.format(**v), reply)


# ---------------------------------------------------------------- raw backup protocol

def raw_backup(ctx, kind="full", version="1"):
    c = Resp(ctx.sock)
    ctx.conns.append(c)
    return c, c.cmd("COFFER.BACKUP", version, kind)


# ---------------------------------------------------------------- the cases
#
# Each row: run(c) injects the failure and returns what the client saw:
#   {"rc", "stderr", "pid"} for coffer, or {"reply"} for a raw RESP client;
# code/name: the expected catalog code; what: phrases the error message says;
# object: phrases stderr names (error or detail line);
# events: [(id, {field: value | matcher})] the server must log for it, or
# no_event: why there is none; after(c, out): more checks (no set left, the
# next backup works...).


def closed_tcp_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run_stale_socket(c):
    s = c.start_server()
    s.kill9()  # the socket file stays behind; nobody listens on it
    assert os.path.exists(c.sock)
    rc, _, err, pid = c.run("backup", "-o", os.path.join(c.work, "x.cbk"))
    return {"rc": rc, "stderr": err, "pid": pid}


def run_no_such_socket(c):
    c.vars["sock"] = os.path.join(c.work, "nobody-listens-here.sock")
    rc, _, err, pid = c.run("backup", "-o", os.path.join(c.work, "x.cbk"), server="unix:" + c.vars["sock"])
    return {"rc": rc, "stderr": err, "pid": pid}


def run_closed_port(c):
    c.vars["addr"] = "127.0.0.1:%d" % closed_tcp_port()
    rc, _, err, pid = c.run("backup", "-o", os.path.join(c.work, "x.cbk"), server=c.vars["addr"])
    return {"rc": rc, "stderr": err, "pid": pid}


def after_no_set(c, out):
    assert not os.path.exists(os.path.join(c.work, "x.cbk")), "a failed backup left a set"
    assert not [f for f in os.listdir(c.work) if f.startswith("x.cbk")], os.listdir(c.work)


def run_access_denied(c):
    if not ROOT:
        pytest.skip("running the client as another uid (setpriv) needs root")
    s = c.start_server()
    c.load_small(200)
    os.chmod(s.sock, 0o666)  # tests only: let uid 65534 reach the socket (cofferd makes it 0660)
    outdir = os.path.join(c.work, "nobody")
    os.makedirs(outdir)
    os.chmod(outdir, 0o777)
    rc, _, err, pid = c.run("backup", "-o", os.path.join(outdir, "x.cbk"),
                            wrap=["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"])
    c.vars["outdir"] = outdir
    return {"rc": rc, "stderr": err, "pid": pid}


def after_access_denied(c, out):
    assert os.listdir(c.vars["outdir"]) == [], "a refused backup left files: %s" % os.listdir(c.vars["outdir"])
    assert all_events(c, c.server.data, 1200) == [], "a backup started for a refused client"


def run_already_running(c):
    c.start_server()
    c.load_small(500)
    holder, rep = raw_backup(c)
    assert rep == "COFFER-BACKUP 1", rep
    read_frame(holder)  # INFO: the first backup has begun (and now waits for us)
    c.vars["holder"] = holder
    c.vars["holder_pid"] = os.getpid()
    rc, _, err, pid = c.run("backup", "-o", os.path.join(c.work, "x.cbk"))
    return {"rc": rc, "stderr": err, "pid": pid}


def after_already_running(c, out):
    after_no_set(c, out)
    c.vars["holder"].close()
    # The vanished holder's backup is aborted; then a backup works again.
    end = deadline(30)
    while True:
        rc, _, err, _ = c.run("backup", "-o", os.path.join(c.work, "y.cbk"))
        if rc == 0 or time.monotonic() > end:
            break
        time.sleep(0.1)
    assert rc == 0, err


def run_version_server(c):
    c.start_server()
    r = Resp(c.sock)
    c.conns.append(r)
    reply = r.cmd("COFFER.BACKUP", "99", "full")
    c.vars["conn"] = r
    return {"reply": reply}


def after_version_server(c, out):
    # The refusal left the connection usable and started nothing.
    assert c.vars["conn"].cmd("PING") == "PONG"
    assert all_events(c, c.server.data, 1200) == []
    c.vars["conn"].close()


def run_version_client(c):
    """A stand-in for a cofferd of another version: it answers the backup
    request with version 2, then reads until the client hangs up."""
    c.vars["sock"] = os.path.join(c.work, "newer.sock")

    def drain(f):
        while f.conn.recv(4096):
            pass
    fake = FakeBackupServer(c.vars["sock"], drain, reply=b"+COFFER-BACKUP 2\r\n")
    fake.start()
    c.threads.append(fake)
    rc, _, err, pid = c.run("backup", "-o", os.path.join(c.work, "x.cbk"), server="unix:" + c.vars["sock"])
    fake.join(30 * SLOW)
    assert b"COFFER.BACKUP" in fake.request, fake.request
    return {"rc": rc, "stderr": err, "pid": pid}


def run_kill9_mid_stream(c):
    s = c.start_server()
    c.load_big()
    p = c.stalled_backup()
    s.kill9()
    rc, err = c.drain(p)
    return {"rc": rc, "stderr": err, "pid": p.pid}


def after_kill9(c, out):
    # The server's side of the story is the recovery at the next start.
    seq = last_seq(c)
    c.server.start()
    wait_event(c, 1003, {}, after_seq=seq)
    rc, _, err, _ = c.run("backup", "-o", os.path.join(c.work, "y.cbk"))
    assert rc == 0, err


def run_client_vanishes(c):
    c.start_server()
    c.load_big()
    r, rep = raw_backup(c)
    assert rep == "COFFER-BACKUP 1", rep
    types = [read_frame(r)[0] for _ in range(4)]  # INFO, FILE coffer.db, DATA, DATA
    assert types[:2] == [1, 2], types
    c.vars["holder_pid"] = os.getpid()
    r.close()
    return {"reply": None}


def after_server_alive_and_next_backup_works(c, out):
    assert c.server.alive() and c.server.redis().ping()
    rc, _, err, _ = c.run("backup", "-o", os.path.join(c.work, "y.cbk"))
    assert rc == 0, err


def run_sigterm_mid_stream(c):
    s = c.start_server()
    c.load_big()
    p = c.stalled_backup()
    s.proc.send_signal(signal.SIGTERM)
    rc, err = c.drain(p)
    try:
        s.proc.wait(timeout=60 * SLOW)
    except subprocess.TimeoutExpired:
        raise AssertionError("cofferd did not stop within %ss of SIGTERM with a backup running:\n%s"
                             % (60 * SLOW, s.log()))
    c.vars["server_rc"] = s.stop()  # already exited: collects the status
    return {"rc": rc, "stderr": err, "pid": p.pid}


def after_sigterm(c, out):
    assert c.vars["server_rc"] == 0, "cofferd did not stop cleanly with a backup running:\n%s" % c.server.log()
    wait_event(c, 1001, {})
    c.server.start()
    rc, _, err, _ = c.run("backup", "-o", os.path.join(c.work, "y.cbk"))
    assert rc == 0, err


def run_disk_full(c):
    if not ROOT:
        pytest.skip("mounting a small tmpfs needs root")
    c.start_server()
    c.load_big()
    small = c.mount_tmpfs(os.path.join(c.work, "small"), "2m")
    c.vars["set"] = os.path.join(small, "full.cbk")
    c.vars["small"] = small
    rc, _, err, pid = c.run("backup", "--compress", "none", "-o", c.vars["set"])
    return {"rc": rc, "stderr": err, "pid": pid}


def after_disk_full(c, out):
    left = os.listdir(c.vars["small"])
    assert left == [], "a backup that failed on a full disk left files behind: %s" % left
    after_server_alive_and_next_backup_works(c, out)


def run_bad_page(c):
    s = c.start_server()
    c.load_small(3000, "p")
    s.stop()  # a clean stop: every page is in the file
    db = os.path.join(s.data, "coffer.db")
    page = 5
    with open(db, "r+b") as f:
        f.seek(page * PAGE_SIZE + 1000)
        f.write(b"\xde\xad\xbe\xef")
    s.start()
    c.vars.update(page=page, db=db)
    rc, _, err, pid = c.run("backup", "-o", os.path.join(c.work, "x.cbk"))
    return {"rc": rc, "stderr": err, "pid": pid}


def after_bad_page(c, out):
    after_no_set(c, out)
    assert c.server.redis().ping()  # the store keeps serving


def run_log_missing(c):
    s = c.start_server()
    c.load_small(1000, "a")
    rc, sout, err, _ = c.run("backup", "--json", "-o", os.path.join(c.work, "full.cbk"))
    assert rc == 0, err
    full = json.loads(sout)
    c.load_small(1000, "b")
    # A copy backup rolls the log without truncating: the generation after
    # the full one is now closed, and the incremental needs it.
    rc, _, err, _ = c.run("backup", "--type", "copy", "-o", os.path.join(c.work, "copy.cbk"))
    assert rc == 0, err
    c.load_small(1000, "c")
    gen = full["gen_last"] + 1
    path = os.path.join(s.data, "log", "%010d.log" % gen)
    logs = sorted(os.listdir(os.path.join(s.data, "log")))
    assert os.path.exists(path) and logs[-1] != os.path.basename(path), logs
    os.unlink(path)
    c.vars["gen"] = gen
    rc, _, err, pid = c.run("backup", "--type", "incremental", "-o", os.path.join(c.work, "x.cbk"))
    return {"rc": rc, "stderr": err, "pid": pid}


def after_log_missing(c, out):
    after_no_set(c, out)
    # The remedy works: a full backup needs no old generation.
    rc, _, err, _ = c.run("backup", "-o", os.path.join(c.work, "full2.cbk"))
    assert rc == 0, err


def run_end_lost_after_confirm(c):
    c.start_server()
    c.load_small(500, "a")
    rc, _, err, _ = c.run("backup", "-o", os.path.join(c.work, "full.cbk"))
    assert rc == 0, err
    c.load_small(500, "b")
    # The server gets the CONFIRM and records the backup; its END is lost.
    proxy = DropEndProxy(c.sock, forward=True)
    proxy.start()
    c.threads.append(proxy)
    c.vars["set"] = os.path.join(c.work, "x.cbk")
    c.vars["holder_pid"] = os.getpid()  # the proxy is the server's peer
    rc, _, err, pid = c.run("backup", "--type", "incremental", "-o", c.vars["set"],
                            server="127.0.0.1:%d" % proxy.port)
    proxy.join(60)
    assert proxy.confirmed.is_set(), err
    return {"rc": rc, "stderr": err, "pid": pid}


def run_server_fails_after_recording(c):
    # The full backup passes; the incremental is recorded, then the server
    # fails before deleting its generations and answers ERROR, not END.
    c.start_server(env=dict(os.environ, COFFER_INJECT="backup.end.truncate:EIO:1:1"))
    c.load_small(500, "a")
    rc, _, err, _ = c.run("backup", "-o", os.path.join(c.work, "full.cbk"))
    assert rc == 0, err
    c.load_small(500, "b")
    c.vars["set"] = os.path.join(c.work, "x.cbk")
    rc, _, err, pid = c.run("backup", "--type", "incremental", "-o", c.vars["set"])
    return {"rc": rc, "stderr": err, "pid": pid}


def run_confirm_never_sent(c):
    # The set is complete and visible, but its CONFIRM never leaves the
    # client (test hook): the server records nothing, the client removes it.
    c.start_server()
    c.load_small(500, "a")
    c.vars["set"] = os.path.join(c.work, "x.cbk")
    rc, _, err, pid = c.run("backup", "-o", c.vars["set"],
                            wrap=("env", "COFFER_INJECT=backup.confirm.send:EPIPE"))
    return {"rc": rc, "stderr": err, "pid": pid}


def after_confirm_never_sent(c, out):
    after_no_set(c, out)
    rc, status, err, _ = c.run("status")
    assert rc == 0, err
    assert not re.search(r"last full:\s+id", status), status  # nothing was recorded
    after_server_alive_and_next_backup_works(c, out)


def after_end_lost(c, out):
    # The set is kept, complete, the server lists it as its last
    # incremental, and the next incremental is chained to it.
    p = subprocess.run([c.coffer_bin, "list", c.vars["set"]], capture_output=True, text=True, timeout=60 * SLOW)
    assert p.returncode == 0, p.stderr
    kept_id = re.search(r"^set id:\s+([0-9a-f]{32})", p.stdout, re.M).group(1)
    assert kept_id in out["stderr"]
    rc, status, err, _ = c.run("status")
    assert rc == 0, err
    assert re.search(r"last incremental:\s+id %s," % kept_id, status), status
    nxt = os.path.join(c.work, "y.cbk")
    rc, _, err, _ = c.run("backup", "--type", "incremental", "-o", nxt)
    assert rc == 0, err
    p = subprocess.run([c.coffer_bin, "list", nxt], capture_output=True, text=True, timeout=60 * SLOW)
    assert re.search(r"^parent id:\s+%s$" % kept_id, p.stdout, re.M), p.stdout
    sets = [os.path.join(c.work, "full.cbk"), c.vars["set"], nxt]
    v = subprocess.run([c.coffer_bin, "verify"] + sets, capture_output=True, text=True, timeout=120 * SLOW)
    assert v.returncode == 0, v.stderr


LOST = one_of("COFFER_E_CONNECTION_LOST", "COFFER_E_BACKUP_ABORTED", "COFFER_E_DISK_FULL")

CASES = [
    dict(id="server_not_running_stale_socket", run=run_stale_socket, code=102, name="COFFER_E_CONNECT",
         what=["cannot connect to cofferd at unix:{sock}", "is cofferd running"], object=["unix:{sock}"],
         no_event="no server runs: nothing can log; the client alone explains", after=after_no_set),
    dict(id="wrong_socket_path", run=run_no_such_socket, code=102, name="COFFER_E_CONNECT",
         what=["cannot connect to cofferd at unix:{sock}", "no such socket"], object=["unix:{sock}"],
         no_event="nothing listens at the address: no server to log", after=after_no_set),
    dict(id="wrong_tcp_address", run=run_closed_port, code=102, name="COFFER_E_CONNECT",
         what=["cannot connect to cofferd at {addr}", "Connection refused"], object=["{addr}"],
         no_event="nothing listens at the address: no server to log", after=after_no_set),
    dict(id="access_denied_uid_outside_backup_group", run=run_access_denied, code=130,
         name="COFFER_E_ACCESS_DENIED", what=["uid 65534", "COFFER.BACKUP"], object=["uid 65534"],
         events=[(1010, {"PEER": "uid 65534", "COMMAND": "COFFER.BACKUP"})], after=after_access_denied),
    dict(id="backup_already_running", run=run_already_running, code=150, name="COFFER_E_BACKUP_IN_PROGRESS",
         what=["is still running", "started by uid {uid} (pid {holder_pid})"], object=["pid {holder_pid}"],
         events=[(1202, {"CODE_NAME": "COFFER_E_BACKUP_IN_PROGRESS", "WHO": "{client_who}"})],
         after=after_already_running),
    dict(id="protocol_version_mismatch_server_answer", run=run_version_server, code=101,
         name="COFFER_E_PROTOCOL_VERSION", what=["version 1", "'99'"],
         events=[(1202, {"CODE_NAME": "COFFER_E_PROTOCOL_VERSION", "PEER|WHO": "{peer_uid}"})],
         after=after_version_server),
    dict(id="protocol_version_mismatch_client_side", run=run_version_client, code=101,
         name="COFFER_E_PROTOCOL_VERSION", what=["protocol version 1", "COFFER-BACKUP 2", "unix:{sock}"],
         object=["unix:{sock}"], no_event="the peer is a stand-in server of another version",
         after=after_no_set),
    dict(id="connection_lost_server_killed_mid_stream", run=run_kill9_mid_stream, code=103,
         name="COFFER_E_CONNECTION_LOST", what=["unix:{sock}", "closed the connection"], object=["unix:{sock}"],
         no_event="the server was killed (-9): it logs recovery (1003) at its next start",
         after=after_kill9),
    dict(id="connection_lost_client_vanishes_mid_stream", run=run_client_vanishes,
         events=[(1203, {"CODE_NAME": "COFFER_E_CONNECTION_LOST", "PEER": "uid {uid}"}),
                 (1202, {"CODE_NAME": "COFFER_E_CONNECTION_LOST", "WHO": "{holder_who}"})],
         after=after_server_alive_and_next_backup_works),
    dict(id="server_shut_down_mid_backup", run=run_sigterm_mid_stream, code=107, name="COFFER_E_SHUTTING_DOWN",
         what=["shutting down", "aborted"], object=["unix:{sock}"],
         events=[(1202, {"CODE_NAME": "COFFER_E_SHUTTING_DOWN", "WHO": "{client_who}"})], after=after_sigterm),
    dict(id="target_disk_full", run=run_disk_full, code=21, name="COFFER_E_DISK_FULL",
         what=["{set}", "No space left on device"], object=["{set}"],
         events=[(1202, {"CODE_NAME": LOST, "WHO": "{client_who}"})], after=after_disk_full),
    dict(id="bad_page_checksum", run=run_bad_page, code=40, name="COFFER_E_PAGE_CHECKSUM",
         what=["page {page}"], object=["{db}", "page={page}"],
         events=[(1100, {"PAGE": "{page}", "FILE": "{db}"}),
                 (1202, {"CODE_NAME": "COFFER_E_PAGE_CHECKSUM", "PAGE": "{page}", "WHO": "{client_who}"})],
         after=after_bad_page),
    dict(id="log_generation_missing", run=run_log_missing, code=81, name="COFFER_E_LOG_MISSING",
         what=["log generation {gen}"], object=["generation={gen}"],
         events=[(1202, {"CODE_NAME": "COFFER_E_LOG_MISSING", "GENERATION": "{gen}", "WHO": "{client_who}"})],
         after=after_log_missing),
    dict(id="confirm_never_reached_the_server", run=run_confirm_never_sent, code=103,
         name="COFFER_E_CONNECTION_LOST", what=["confirmation", "unix:{sock}", "Broken pipe"],
         object=["unix:{sock}"],
         events=[(1202, {"CODE_NAME": "COFFER_E_CONNECTION_LOST", "WHO": "{client_who}"})],
         after=after_confirm_never_sent),
    dict(id="end_frame_lost_after_confirm", run=run_end_lost_after_confirm, code=157,
         name="COFFER_E_BACKUP_OUTCOME_UNKNOWN",
         what=['"{set}"', "was kept", "may or may not have recorded", "coffer status"], object=["{set}"],
         events=[(1201, {"TYPE": "incremental", "WHO": "{holder_who}"})], after=after_end_lost),
    dict(id="server_fails_after_recording", run=run_server_fails_after_recording, code=157,
         name="COFFER_E_BACKUP_OUTCOME_UNKNOWN",
         what=['"{set}"', "was kept", "may or may not have recorded",
               "before deleting the log generations", "COFFER_E_IO"], object=["{set}"],
         events=[(1202, {"CODE_NAME": "COFFER_E_IO", "TYPE": "incremental", "WHO": "{client_who}"})],
         after=after_end_lost),
]


def expand(fields, v):
    out = {}
    for k, want in fields.items():
        if want == "{client_who}":
            out[k] = has_pid(v["client_pid"])
        elif want == "{holder_who}":
            out[k] = has_pid(v["holder_pid"])
        elif want == "{peer_uid}":  # this process, as a Unix peer: "uid N" or "uid N (pid P)"
            out[k] = lambda s: re.match(r"uid %d\b" % UID, s) is not None
            out[k].__name__ = "names uid %d" % UID
        elif isinstance(want, str):
            out[k] = want.format(**v)
        else:
            out[k] = want
    return out


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_backup_failure_explains_itself(case, ctx):
    out = case["run"](ctx)
    v = dict(ctx.vars)
    if out.get("pid"):
        v["client_pid"] = out["pid"]
    # What each side said, for the record (pytest -s, or the junit report).
    print("case %s: client: %s" % (case["id"], out.get("stderr", out.get("reply")) or "(raw client, no reply)"))
    # The client's side.
    if "reply" in out:
        if out["reply"] is not None:
            check_reply(case, out["reply"], v)
    else:
        check_message(case, out, v)
    # The server's side: each expected event, with its fields.
    if case.get("events"):
        for event_id, fields in case["events"]:
            e = wait_event(ctx, event_id, expand(fields, v))
            check_not_bare(e["message"], "event %s" % json.dumps(e))
            print("case %s: server event %d: %s %s" % (case["id"], event_id, e["message"], e["fields"]))
    else:
        assert case.get("no_event"), "a case without a server event must say why"
        print("%s: no server event (%s)" % (case["id"], case["no_event"]))
    if case.get("after"):
        case["after"](ctx, out)
