"""Crash loop: cofferd is killed with SIGKILL at a random moment while it
takes writes and online backups, again and again (WiredTiger's
random_abort, with the backups of ESE).

Each round: start cofferd on the same store (crash recovery), check that
every write acknowledged in any earlier round is there with its value,
start two writers (each records a SET once it returned OK, and keeps one
key it overwrites) and a `coffer backup` loop (a full set, then
incrementals; a new full every FULL_EVERY rounds), and SIGKILL the server
at a random moment. A backup that exits 0 must have made its set visible;
one whose END frame was lost after its CONFIRM (exit 157,
COFFER_E_BACKUP_OUTCOME_UNKNOWN) must have kept its set, complete; any
other failure must leave nothing. At the end: a clean stop, `coffer check`,
and every set kept or made verifies as the end of its chain - its parent's
chain, then itself - and restores holding every write acknowledged before
its backup started. A kept set is recorded by the server or not: a later
incremental names it as parent, or skips it for the set before it (it is
then a standalone restore point after its parent); no set may be the
parent of a later one across a set that exited 0, and no parent may be
missing (the defect of a client deleting a set the server had recorded).

Rounds: COFFER_CRASHLOOP_ROUNDS, default 15 (5 in sanitizer builds);
COFFER_CRASHLOOP_SEED makes the kill moments repeatable (the seed is in
every failure message). With COFFER_RELIABILITY_OUT=FILE the figures are
appended to FILE for tools/reliability.py.
"""
import json
import os
import random
import shutil
import subprocess
import threading
import time

import redis

import server_util as su
from server_util import SLOW

ROUNDS = int(os.environ.get("COFFER_CRASHLOOP_ROUNDS", 5 if SLOW > 1 else 15))
FULL_EVERY = 5
MAX_RESTORES = 12  # restores checked besides every chain's last set and every kept set
OUTCOME_UNKNOWN = 157  # COFFER_E_BACKUP_OUTCOME_UNKNOWN: the set kept, its recording unknown


class Acks:
    """Every acknowledged write, in the order the acknowledgements came."""

    def __init__(self):
        self.mu = threading.Lock()
        self.order = []       # keys written once
        self.value = {}       # key -> value
        self.hot = {}         # overwritten key -> (last acknowledged, or None; in flight, or None)

    def ack(self, k, v):
        with self.mu:
            self.order.append(k)
            self.value[k] = v

    def mark(self):
        with self.mu:
            return len(self.order)


class Writer(threading.Thread):
    def __init__(self, sock, acks, rnd, wid):
        super().__init__(daemon=True)
        self.sock, self.acks, self.rnd, self.wid = sock, acks, rnd, wid
        self.stop = threading.Event()
        self.n = 0
        self.error = None

    def run(self):
        r = redis.Redis(unix_socket_path=self.sock, socket_timeout=20 * SLOW)
        hot = "hot:w%d" % self.wid
        try:
            while not self.stop.is_set() and self.n < 200000:
                if self.n % 20 == 19:
                    k, v = hot, "r%02d:%06d" % (self.rnd, self.n)
                    last = self.acks.hot.get(hot, (None, None))[0]
                    self.acks.hot[hot] = (last, v.encode())  # in flight
                    r.set(k, v)
                    self.acks.hot[hot] = (v.encode(), None)
                else:
                    k = "r%02dw%d:%06d" % (self.rnd, self.wid, self.n)
                    v = ("%s|" % k) * (1 + self.n % 13)
                    r.set(k, v)  # an exception: unknown whether it was stored
                    self.acks.ack(k, v.encode())
                self.n += 1
        except (redis.ConnectionError, redis.TimeoutError) as e:
            self.error = e  # the server was killed
        except redis.ResponseError as e:
            self.error = e


class Backups(threading.Thread):
    """coffer backup in a loop: full until one succeeds, then incrementals."""

    def __init__(self, coffer_bin, sock, setdir, state, acks):
        super().__init__(daemon=True)
        self.coffer_bin, self.sock, self.setdir, self.state, self.acks = coffer_bin, sock, setdir, state, acks
        self.stop = threading.Event()
        self.problems = []

    def run(self):
        st = self.state
        while not self.stop.is_set() and st["seq"] < 10000:
            kind = "full" if st["need_full"] else "incremental"
            st["seq"] += 1
            path = os.path.join(self.setdir, "%04d-%s.cbk" % (st["seq"], kind))
            mark = self.acks.mark()
            try:
                p = subprocess.run([self.coffer_bin, "--server", "unix:" + self.sock, "backup",
                                    "--type", kind, "-o", path],
                                   capture_output=True, text=True, timeout=120 * SLOW)
            except subprocess.TimeoutExpired:
                self.problems.append("coffer backup %s did not end in %ss" % (path, 120 * SLOW))
                return
            leftovers = [f for f in os.listdir(self.setdir) if ".tmp-" in f]
            if leftovers:
                self.problems.append("a backup left temporary files: %s" % leftovers)
            if p.returncode == 0:
                if not os.path.isfile(path):
                    self.problems.append("coffer backup exited 0 but %s does not exist" % path)
                st["ok"].append({"path": path, "kind": kind, "mark": mark, "kept": False})
                st["need_full"] = False
            elif p.returncode == OUTCOME_UNKNOWN:
                # The END was lost after CONFIRM: the set must be kept, and
                # the error must say where. (A kept full leaves need_full:
                # the server may not have recorded it.)
                if not os.path.isfile(path):
                    self.problems.append("coffer backup exited %d (kept) but %s does not exist:\n%s"
                                         % (p.returncode, path, p.stderr))
                elif '"%s"' % path not in p.stderr or "was kept" not in p.stderr:
                    self.problems.append("the outcome-unknown error does not name the kept set %s:\n%s"
                                         % (path, p.stderr))
                st["ok"].append({"path": path, "kind": kind, "mark": mark, "kept": True})
                st["kept"] += 1
            else:
                st["failed"] += 1
                if os.path.exists(path):
                    self.problems.append("a failed backup left its set visible: %s\n%s" % (path, p.stderr))
            time.sleep(0.05)


def verify_all(r, acks, seed, what):
    keys = acks.order
    lost = []
    for i in range(0, len(keys), 1000):
        chunk = keys[i:i + 1000]
        for k, v in zip(chunk, r.mget(chunk)):
            if v != acks.value[k]:
                lost.append((k, v))
    for k, (last, inflight) in acks.hot.items():
        v = r.get(k)
        if v not in (last, inflight) or (v is None and last is not None):
            lost.append((k, v))
    assert not lost, "seed %d, %s: %d acknowledged write(s) lost or wrong, e.g. %s" % (
        seed, what, len(lost), lost[:5])
    return len(keys)


def set_ids(coffer_bin, path):
    """(set id, parent id) from coffer list."""
    p = subprocess.run([coffer_bin, "list", path], capture_output=True, text=True, timeout=120 * SLOW)
    assert p.returncode == 0, p.stderr
    f = dict(line.split(":", 1) for line in p.stdout.splitlines() if ":" in line and not line.startswith(" "))
    return f["set id"].strip(), f["parent id"].strip()


def chains_of(coffer_bin, sets, seed):
    """Each set's restore chain: a full alone; an incremental after its
    parent's chain. Sets: every set that exited 0 or was kept, in the order
    taken. The parent of an incremental must be among them (a set the
    server recorded is never deleted), and every set between the parent and
    the incremental must be a kept one (a set that exited 0 was recorded:
    it would be the parent). So a kept set named as parent was recorded
    ("recorded" True); one skipped was not (False); the others are unknown
    (None: the next backup was a full, or there was none). Returns the leaf
    chains (sets no later set names as parent)."""
    by_id = {}
    for i, s in enumerate(sets):
        s["i"] = i
        s["id"], s["parent"] = set_ids(coffer_bin, s["path"])
        s["recorded"] = None if s["kept"] else True
        s["leaf"] = True
        if s["kind"] == "full":
            s["chain"] = [s]
        else:
            par = by_id.get(s["parent"])
            assert par is not None, "seed %d: %s names %s as parent, which is none of the sets made or " \
                "kept (a set the server recorded was deleted?)" % (seed, s["path"], s["parent"])
            between = sets[par["i"] + 1:i]
            done = [b["path"] for b in between if not b["kept"]]
            assert not done, "seed %d: %s names %s as parent across %s, which exited 0" % (
                seed, s["path"], par["path"], done)
            if par["kept"]:
                assert par["recorded"] is not False, "seed %d: %s was skipped, then named as parent" % (
                    seed, par["path"])
                par["recorded"] = True
            for b in between:
                assert b["recorded"] is not True, "seed %d: %s was named as parent, then skipped" % (
                    seed, b["path"])
                b["recorded"] = False
            par["leaf"] = False
            s["chain"] = par["chain"] + [s]
        by_id[s["id"]] = s
    return [s["chain"] for s in sets if s["leaf"]]


def test_kill9_during_writes_and_backups(cofferd_bin, coffer_bin):
    seed = int(os.environ.get("COFFER_CRASHLOOP_SEED", int(time.time() * 1000) % 1000000))
    rng = random.Random(seed)
    work = su.short_dir("ccl")
    setdir = os.path.join(work, "sets")
    os.makedirs(setdir)
    cfg = os.path.join(work, "cofferd.ini")
    with open(cfg, "w") as f:
        f.write("[cofferd]\nlog-file-size = 1M\n")
    server = su.Server(cofferd_bin, os.path.join(work, "data"), sock=os.path.join(work, "s.sock"),
                       args=["--config", cfg], start=False)
    acks = Acks()
    state = {"seq": 0, "need_full": True, "ok": [], "failed": 0, "kept": 0}
    problems = []
    survived = 0
    checked = 0
    try:
        for rnd in range(ROUNDS):
            server.start(timeout=60)
            checked = verify_all(server.redis(), acks, seed, "after kill %d" % rnd)
            survived = rnd
            if rnd % FULL_EVERY == 0:
                state["need_full"] = True
            writers = [Writer(server.sock, acks, rnd, w) for w in range(2)]
            backups = Backups(coffer_bin, server.sock, setdir, state, acks)
            for t in writers + [backups]:
                t.start()
            time.sleep(rng.uniform(0.3, 1.5) * SLOW)
            server.kill9()
            for t in writers + [backups]:
                t.stop.set()
            for t in writers + [backups]:
                t.join(180 * SLOW)
                assert not t.is_alive(), "seed %d: a client thread did not end after the kill" % seed
            for w in writers:
                if w.error is not None and not isinstance(w.error, (redis.ConnectionError, redis.TimeoutError)):
                    problems.append("round %d: writer got %r" % (rnd, w.error))
            problems += ["round %d: %s" % (rnd, p) for p in backups.problems]
        server.start(timeout=60)
        checked = verify_all(server.redis(), acks, seed, "after the last kill")
        survived = ROUNDS
        assert server.stop() == 0
        c = subprocess.run([coffer_bin, "check", server.data], capture_output=True, text=True,
                           timeout=120 * SLOW)
        assert c.returncode == 0, "seed %d: coffer check after the crash loop:\n%s%s" % (seed, c.stdout, c.stderr)
        assert not problems, "seed %d:\n%s" % (seed, "\n".join(problems))

        # Every set made or kept verifies at the end of its chain and restores.
        ok = state["ok"]
        assert ok and ok[0]["kind"] == "full", "seed %d: no backup succeeded in %d rounds" % (seed, ROUNDS)
        chains = chains_of(coffer_bin, ok, seed)
        for ch in chains:
            v = subprocess.run([coffer_bin, "verify"] + [s["path"] for s in ch], capture_output=True,
                               text=True, timeout=300 * SLOW)
            assert v.returncode == 0, "seed %d: chain %s does not verify:\n%s" % (
                seed, [os.path.basename(s["path"]) for s in ch], v.stderr)
        # Restored: each chain's last set and every kept set, then others
        # spread evenly, MAX_RESTORES of them.
        must = [s["chain"] for s in ok if s["leaf"] or s["kept"]]
        rest = [s["chain"] for s in ok if not (s["leaf"] or s["kept"])]
        step = max(1, len(rest) // MAX_RESTORES)
        pick = must + rest[::step][:MAX_RESTORES]
        restored = 0
        for i, pre in enumerate(pick):
            target = os.path.join(work, "restore%02d" % i)
            r = subprocess.run([coffer_bin, "restore"] + [s["path"] for s in pre] + ["--target", target],
                               capture_output=True, text=True, timeout=300 * SLOW)
            assert r.returncode == 0, "seed %d: restore of %s failed:\n%s" % (
                seed, [os.path.basename(s["path"]) for s in pre], r.stderr)
            s2 = su.Server(cofferd_bin, target, sock=os.path.join(work, "r%02d.sock" % i))
            try:
                mark = pre[-1]["mark"]
                keys = acks.order[:mark]
                rr = s2.redis()
                missing = []
                for j in range(0, len(keys), 1000):
                    chunk = keys[j:j + 1000]
                    missing += [k for k, v in zip(chunk, rr.mget(chunk)) if v != acks.value[k]]
                assert not missing, "seed %d: the restore of %s lacks %d write(s) acknowledged before " \
                    "its last backup started, e.g. %s" % (seed, [os.path.basename(s["path"]) for s in pre],
                                                           len(missing), missing[:5])
            finally:
                assert s2.stop() == 0
            shutil.rmtree(target, ignore_errors=True)
            restored += 1
        kept = [s for s in ok if s["kept"]]
        su.reliability("crashloop", rounds=ROUNDS, survived=survived, acked=checked, lost=0,
                       backups_ok=len(ok) - len(kept), backups_failed=state["failed"],
                       backups_kept=len(kept), kept_recorded=sum(1 for s in kept if s["recorded"] is True),
                       kept_not_recorded=sum(1 for s in kept if s["recorded"] is False),
                       chains=len(chains), chain_breaks=0, restores_checked=restored, seed=seed)
    except AssertionError:
        su.reliability("crashloop", rounds=ROUNDS, survived=survived, acked=checked, lost=None, failed=True,
                       seed=seed)
        raise
    finally:
        server.close()
        shutil.rmtree(work, ignore_errors=True)


# ---- an END frame lost after CONFIRM: the set is kept, the outcome unknown


def last_backup_id(coffer_bin, sock, kind):
    """The id of the server's last backup of KIND from coffer status, or None."""
    p = subprocess.run([coffer_bin, "--server", "unix:" + sock, "status"], capture_output=True, text=True,
                       timeout=60 * SLOW)
    assert p.returncode == 0, p.stderr
    for line in p.stdout.splitlines():
        if line.strip().startswith("last %s:" % kind):
            f = line.split()
            return f[f.index("id") + 1].rstrip(",") if "id" in f else None
    raise AssertionError("coffer status has no 'last %s' line:\n%s" % (kind, p.stdout))


def restored_has(cofferd_bin, coffer_bin, work, sets, want, name):
    target = os.path.join(work, name)
    r = subprocess.run([coffer_bin, "restore"] + sets + ["--target", target], capture_output=True, text=True,
                       timeout=120 * SLOW)
    assert r.returncode == 0, "restore of %s failed:\n%s" % ([os.path.basename(x) for x in sets], r.stderr)
    s2 = su.Server(cofferd_bin, target, sock=os.path.join(work, name + ".sock"))
    try:
        rr = s2.redis()
        got = {k: rr.get(k) for k in want}
        assert got == {k: v.encode() for k, v in want.items()}, "restore of %s: %s" % (
            [os.path.basename(x) for x in sets], got)
    finally:
        assert s2.stop() == 0
    shutil.rmtree(target, ignore_errors=True)


def backup_via_proxy(s, coffer_bin, forward, path):
    proxy = su.DropEndProxy(s.sock, forward=forward)
    proxy.start()
    p = subprocess.run([coffer_bin, "--server", "127.0.0.1:%d" % proxy.port, "backup", "--json",
                        "--type", "incremental", "-o", path], capture_output=True, text=True,
                       timeout=120 * SLOW)
    proxy.join(60)
    assert not proxy.is_alive()
    assert proxy.confirmed.is_set(), "the client never confirmed:\n%s" % p.stderr
    print("client (%s): %s%s" % ("CONFIRM forwarded" if forward else "CONFIRM swallowed", p.stderr, p.stdout))
    # The client cannot know the outcome: it keeps the set and says so.
    assert p.returncode == OUTCOME_UNKNOWN, "exit %d:\n%s" % (p.returncode, p.stderr)
    errors = [l for l in p.stderr.splitlines() if l.startswith("coffer: error: ")]
    assert len(errors) == 1 and errors[0].endswith("(COFFER_E_BACKUP_OUTCOME_UNKNOWN)"), p.stderr
    for phrase in ('"%s"' % path, "was kept", "may or may not have recorded", "coffer status"):
        assert phrase in errors[0], "the message does not say %r:\n%s" % (phrase, p.stderr)
    assert any(l.startswith("coffer: hint: ") and "standalone restore point" in l
               for l in p.stderr.splitlines()), p.stderr
    summary = json.loads(p.stdout)
    assert summary["outcome"] == "unknown" and summary["kept"] is True, summary
    assert summary["truncated_from"] is None and summary["set"] == path, summary
    assert os.path.isfile(path) and not [f for f in os.listdir(os.path.dirname(path)) if ".tmp-" in f]
    assert summary["id"] in errors[0]
    kept_id, _ = set_ids(coffer_bin, path)
    assert kept_id == summary["id"]
    v = subprocess.run([coffer_bin, "verify", path], capture_output=True, text=True, timeout=120 * SLOW)
    assert v.returncode == 0, v.stderr
    return kept_id


def incremental_when_idle(s, coffer_bin, path):
    """The next incremental over the socket; the server may still be
    noticing that the proxied connection is gone (COFFER_E_BACKUP_IN_PROGRESS,
    150): retried within a bounded deadline."""
    end = su.deadline(30)
    while True:
        q = subprocess.run([coffer_bin, "--server", "unix:" + s.sock, "backup", "--type", "incremental",
                            "-o", path], capture_output=True, text=True, timeout=120 * SLOW)
        if q.returncode != 150 or time.monotonic() > end:
            break
        time.sleep(0.1)
    assert q.returncode == 0, q.stderr


def start_with_a_full(s, coffer_bin, work):
    """Start S, write a=1 and take the full backup WORK/1-full.cbk; returns
    (a redis client, the set's path)."""
    s.start()
    r = s.redis()
    r.set("a", "1")
    full = os.path.join(work, "1-full.cbk")
    p = subprocess.run([coffer_bin, "--server", "unix:" + s.sock, "backup", "-o", full],
                       capture_output=True, text=True, timeout=120 * SLOW)
    assert p.returncode == 0, p.stderr
    return r, full


def test_lost_end_frame_keeps_a_recorded_set(cofferd_bin, coffer_bin):
    """The server got the CONFIRM and recorded the backup; its END is lost.
    The kept set is the parent of the next incremental: the chain holds."""
    work = su.short_dir("cle")
    s = su.Server(cofferd_bin, os.path.join(work, "data"), sock=os.path.join(work, "s.sock"), start=False)
    try:
        r, full = start_with_a_full(s, coffer_bin, work)
        r.set("b", "2")
        lost = os.path.join(work, "2-incr.cbk")
        kept_id = backup_via_proxy(s, coffer_bin, True, lost)
        # What coffer status shows: the server did record it.
        su.wait_for(lambda: last_backup_id(coffer_bin, s.sock, "incremental") == kept_id, 30 * SLOW,
                    "the server to list the kept set as its last incremental")
        r.set("c", "3")
        incr = os.path.join(work, "3-incr.cbk")
        incremental_when_idle(s, coffer_bin, incr)
        assert set_ids(coffer_bin, incr)[1] == kept_id
        assert s.stop() == 0
        sets = [full, lost, incr]
        v = subprocess.run([coffer_bin, "verify"] + sets, capture_output=True, text=True, timeout=120 * SLOW)
        assert v.returncode == 0, "the sets do not form a chain:\n%s" % v.stderr
        restored_has(cofferd_bin, coffer_bin, work, [full, lost], {"a": "1", "b": "2"}, "r1")
        restored_has(cofferd_bin, coffer_bin, work, sets, {"a": "1", "b": "2", "c": "3"}, "r2")
    finally:
        s.close()
        shutil.rmtree(work, ignore_errors=True)


def test_lost_confirm_keeps_an_unrecorded_set(cofferd_bin, coffer_bin):
    """The CONFIRM never reaches the server: nothing is recorded. The kept
    set is a standalone restore point after its parent; the next incremental
    is chained to the full, not to it."""
    work = su.short_dir("clc")
    s = su.Server(cofferd_bin, os.path.join(work, "data"), sock=os.path.join(work, "s.sock"), start=False)
    try:
        r, full = start_with_a_full(s, coffer_bin, work)
        full_id, _ = set_ids(coffer_bin, full)
        r.set("b", "2")
        lost = os.path.join(work, "2-incr.cbk")
        kept_id = backup_via_proxy(s, coffer_bin, False, lost)
        r.set("c", "3")
        incr = os.path.join(work, "3-incr.cbk")
        incremental_when_idle(s, coffer_bin, incr)
        assert last_backup_id(coffer_bin, s.sock, "incremental") != kept_id
        assert set_ids(coffer_bin, incr)[1] == full_id
        assert s.stop() == 0
        for chain in ([full, lost], [full, incr]):
            v = subprocess.run([coffer_bin, "verify"] + chain, capture_output=True, text=True,
                               timeout=120 * SLOW)
            assert v.returncode == 0, "%s:\n%s" % ([os.path.basename(x) for x in chain], v.stderr)
        restored_has(cofferd_bin, coffer_bin, work, [full, lost], {"a": "1", "b": "2"}, "r1")
        restored_has(cofferd_bin, coffer_bin, work, [full, incr], {"a": "1", "b": "2", "c": "3"}, "r2")
    finally:
        s.close()
        shutil.rmtree(work, ignore_errors=True)
