"""Hardening, end to end: what an operator sees when the disk fills up, when
a file of the store or of a backup set is damaged, and when the input is
hostile. Every case drives the real programs (cofferd, coffer) and checks
what the user gets: the exit status is the catalog code, the message names
the object (file, page, generation, offset, block), a `coffer: hint:` line
says what to do, and nothing damaged is used silently.

1. Disk full (a small tmpfs; needs root to mount it): in the log, in a
   checkpoint, in a backup's output, in a restore's target. cofferd refuses
   writes with the cause, keeps serving reads, and resumes by itself once
   there is room (src/server/srv_recover.c, event 1005), losing nothing it
   acknowledged.
2. Damage: data pages, the database file cut short, one and both header
   copies, log records (not at the end, in the last generation, the very
   last), log generations cut short, a log header, the checkpoint file,
   backup set blocks, record headers, manifests and trailers.
3. Hostile input: names and sizes in a crafted backup set, a planted
   symbolic link in a restore target, file modes, secrets in logs, slow and
   half-open clients.

Cases marked xfail(strict=True) are product defects found by these tests
(docs/reliability.md lists them); they fail loudly once fixed, so that the
mark is removed.

With COFFER_RELIABILITY_OUT=FILE each case appends what it tried and what it
saw to FILE (JSON lines) for tools/reliability.py.
"""
import ctypes
import errno
import os
import re
import shutil
import socket
import stat
import struct
import subprocess
import time

import pytest
import redis

import server_util as su
from conftest import BUILD
from server_util import SLOW, Resp, RespError, encode, reliability

# ---------------------------------------------------------------- helpers

PAGE = 8192  # cofferd's default page size

CODES = {"FATAL": 8, "DISK_FULL": 21, "PERMISSION": 22, "DIR_NOT_EMPTY": 25, "PAGE_CHECKSUM": 40, "PAGE_CORRUPT": 41,
         "HEADER_CORRUPT": 43, "LOG_CHECKSUM": 80, "LOG_CORRUPT": 84, "CHECKPOINT_CORRUPT": 85,
         "LOG_FULL": 87, "LIMIT": 104, "ARCHIVE_CORRUPT": 190, "ARCHIVE_TRUNCATED": 191,
         "UNSAFE_PATH": 193, "DIGEST_MISMATCH": 194}


class Result:
    def __init__(self, p):
        self.rc, self.out, self.err = p.returncode, p.stdout, p.stderr

    def __repr__(self):
        return "exit %d\nstdout:\n%s\nstderr:\n%s" % (self.rc, self.out, self.err)


def coffer(coffer_bin, *args, sock=None, timeout=120, stdin=None):
    cmd = [coffer_bin] + (["--server", "unix:" + sock] if sock else []) + [str(a) for a in args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout * SLOW,
                       stdin=stdin if stdin is not None else subprocess.DEVNULL)
    return Result(p)


def named_error(r, code, *objects):
    """R failed with catalog CODE, one error line naming the code, the
    objects (substrings) named in error or detail, and a hint line."""
    name = [k for k, v in CODES.items() if v == code][0]
    assert r.rc == code, "expected exit %d (COFFER_E_%s):\n%r" % (code, name, r)
    assert re.search(r"^(coffer|cofferd): error: .+ \(COFFER_E_%s\)$" % name, r.err, re.M), r
    assert re.search(r"^(coffer|cofferd): hint: \S", r.err, re.M), "no hint line:\n%r" % r
    for o in objects:
        assert o in r.err, "the message does not name %r:\n%r" % (o, r)


def flip(path, off, mask=0x10):
    with open(path, "r+b") as f:
        f.seek(off)
        b = f.read(1)
        f.seek(off)
        f.write(bytes([b[0] ^ mask]))


def events(coffer_bin, data, event_id):
    return su.events(coffer_bin, data, event_id)


def wait_event(coffer_bin, data, event_id, seconds=20):
    return su.wait_for(lambda: events(coffer_bin, data, event_id), seconds,
                       what="event %d in %s" % (event_id, data))


def put(r, acked, keys):
    """SET each key to a value derived from it; record what was acknowledged."""
    p = r.pipeline(transaction=False)
    for k in keys:
        p.set(k, "%s=%s" % (k, "v" * 200))
    p.execute()
    for k in keys:
        acked[k] = ("%s=%s" % (k, "v" * 200)).encode()


def check_all(r, acked):
    """Every acknowledged key has its value (MGET in chunks)."""
    keys = sorted(acked)
    lost = []
    for i in range(0, len(keys), 500):
        chunk = keys[i:i + 500]
        for k, v in zip(chunk, r.mget(chunk)):
            if v != acked[k]:
                lost.append(k)
    assert not lost, "%d acknowledged write(s) lost, e.g. %s" % (len(lost), lost[:5])
    return len(keys)


@pytest.fixture
def mk(cofferd_bin):
    yield from su.factory(cofferd_bin)


@pytest.fixture
def tmpfs():
    """mount(SIZE) -> a fresh tmpfs of that size; unmounted at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = []

    def mount(size):
        d = su.short_dir("cfm")
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size, "coffer-test", d],
                           capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            os.rmdir(d)
            pytest.skip("cannot mount a tmpfs: %s" % p.stderr.strip())
        mounted.append(d)
        return d

    yield mount
    for d in reversed(mounted):
        if subprocess.run(["umount", d], capture_output=True, timeout=60).returncode != 0:
            subprocess.run(["umount", "-l", d], capture_output=True, timeout=60)
        shutil.rmtree(d, ignore_errors=True)


def fill(d, leave):
    """Fill the file system of D with D/filler, then give back LEAVE bytes."""
    path = os.path.join(d, "filler")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    chunk = b"\0" * (1 << 20)
    try:
        for _ in range(1 << 16):  # bounded: 64 GiB
            try:
                if os.write(fd, chunk) == 0:
                    break
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
                break
    finally:
        os.close(fd)
    size = os.path.getsize(path)
    os.truncate(path, max(0, size - leave))
    return path


def config(d, **keys):
    path = os.path.join(d, "cofferd.ini")
    with open(path, "w") as f:
        f.write("[cofferd]\n")
        for k, v in keys.items():
            f.write("%s = %s\n" % (k.replace("_", "-"), v))
    return path


# ---------------------------------------------------------------- 1. disk full


def write_until_refused(r, acked, prefix, limit=40000):
    """SET new keys until the server refuses one; returns the error text."""
    for i in range(limit):
        k = "%s%07d" % (prefix, i)
        v = ("%s=%s" % (k, "d" * 300)).encode()
        try:
            r.set(k, v)
        except redis.ResponseError as e:
            return str(e)
        acked[k] = v
    raise AssertionError("%d writes and the disk never filled" % limit)


def test_disk_full_in_the_log_refuses_writes_serves_reads_and_resumes(tmpfs, mk, coffer_bin):
    fs = tmpfs("16m")
    # No timed checkpoint (the default comes every 30 s): the log, not a
    # checkpoint's page writes, is what meets the full disk first.
    cfg = config(mk.scratch(), log_file_size="1M", checkpoint_interval=86400)
    s = mk(args=["--config", cfg], data=os.path.join(fs, "data"))
    r = s.redis()
    acked = {}
    put(r, acked, ["pre%05d" % i for i in range(300)])
    # A backup session running when the disk fills: it asked and does not read.
    parked = Resp(s.sock)
    parked.send(encode("COFFER.BACKUP", "1", "full"))
    assert parked.reply() == "COFFER-BACKUP 1"

    filler = fill(fs, leave=256 << 10)
    first = write_until_refused(r, acked, "k")
    # The failing write: its own cause, with the file.
    assert "No space left on device" in first and re.search(r"\(COFFER_E_(LOG_FULL|DISK_FULL)\)$", first), first
    assert os.path.join(fs, "data", "log") in first, first
    # The next write is refused with a reply (not a dropped connection),
    # carrying COFFER_E_FATAL and the original cause.
    c = Resp(s.sock)
    e = c.cmd("SET", "after", "x")
    assert isinstance(e, RespError) and e.endswith("(COFFER_E_FATAL)") and "No space left on device" in e, e
    assert "reopens the store by itself" in e, e
    c.close()
    # Reads go on: every acknowledged write is there.
    check_all(s.redis(), acked)
    ev = wait_event(coffer_bin, s.data, 1004)[-1]
    assert ev["fields"]["CODE_NAME"] in ("COFFER_E_LOG_FULL", "COFFER_E_DISK_FULL"), ev
    assert ev["fields"]["WHILE"] == "appending a commit to the log", ev
    # A backup is refused clearly while writes are stopped, and makes no set.
    out = os.path.join(mk.scratch(), "refused.cbk")
    b = coffer(coffer_bin, "backup", "-o", out, sock=s.sock)
    named_error(b, CODES["FATAL"], "No space left on device")
    assert not os.path.exists(out)
    ev = wait_event(coffer_bin, s.data, 1202)[-1]
    assert ev["fields"]["CODE_NAME"] == "COFFER_E_FATAL" and ev["fields"]["TYPE"] == "full", ev
    assert s.alive()
    assert not events(coffer_bin, s.data, 1005)

    os.unlink(filler)  # space returns
    ev = wait_event(coffer_bin, s.data, 1005)[-1]
    assert ev["fields"]["BACKUPS_ABORTED"] == "1", ev
    assert ev["fields"]["CAUSE"] in ("COFFER_E_LOG_FULL", "COFFER_E_DISK_FULL"), ev
    assert parked.closed(), "the backup session running at the failure was not aborted"
    r = s.redis()
    r.set("after", "y")
    acked["after"] = b"y"
    put(r, acked, ["post%05d" % i for i in range(300)])
    n = check_all(r, acked)
    ok = coffer(coffer_bin, "backup", "-o", os.path.join(mk.scratch(), "after.cbk"), sock=s.sock)
    assert ok.rc == 0, ok
    # Across a restart as well.
    assert s.stop() == 0
    s.start()
    check_all(s.redis(), acked)
    reliability("diskfull", where="log", refused=True, reads_served=True, resumed=True,
                acked=n, lost=0)


def test_disk_full_in_a_checkpoint_refuses_writes_and_resumes(tmpfs, mk, coffer_bin):
    fs = tmpfs("16m")
    cfg = config(mk.scratch(), log_file_size="1M")
    # A small cache: checkpoints come after 128 KiB of dirty pages, long
    # before the 1 MiB log generation is full, so the database file is what
    # cannot grow.
    s = mk(args=["--config", cfg, "--cache-size", "256K"], data=os.path.join(fs, "data"))
    r = s.redis()
    acked = {}
    put(r, acked, ["pre%05d" % i for i in range(200)])
    filler = fill(fs, leave=256 << 10)
    err = write_until_refused(r, acked, "c")
    assert "No space left on device" in err, err
    ev = wait_event(coffer_bin, s.data, 1004)[-1]
    assert ev["fields"]["WHILE"] == "writing pages for a checkpoint", ev
    assert ev["fields"]["CODE_NAME"] == "COFFER_E_DISK_FULL", ev
    assert ev["fields"]["FILE"] == os.path.join(s.data, "coffer.db") and "OFFSET" in ev["fields"], ev
    e = Resp(s.sock).cmd("SET", "x", "y")
    assert isinstance(e, RespError) and e.endswith("(COFFER_E_FATAL)"), e
    assert "writing pages for a checkpoint" in e and "coffer.db" in e, e
    check_all(s.redis(), acked)

    os.unlink(filler)
    wait_event(coffer_bin, s.data, 1005)
    r = s.redis()
    put(r, acked, ["post%05d" % i for i in range(2000)])  # several checkpoints
    n = check_all(r, acked)
    assert s.stop() == 0
    c = coffer(coffer_bin, "check", s.data)
    assert c.rc == 0, c
    s.start()
    check_all(s.redis(), acked)
    reliability("diskfull", where="checkpoint", refused=True, reads_served=True, resumed=True,
                acked=n, lost=0)


def test_store_that_cannot_be_reopened_refuses_everything_until_it_can(tmpfs, mk, coffer_bin):
    """The reopen after a full disk fails (here: both header copies were
    damaged meanwhile): every request gets that error, cofferd stays up and
    tries again; once the store opens, everything acknowledged is there."""
    fs = tmpfs("16m")
    cfg = config(mk.scratch(), log_file_size="1M")
    s = mk(args=["--config", cfg], data=os.path.join(fs, "data"))
    r = s.redis()
    acked = {}
    put(r, acked, ["pre%05d" % i for i in range(300)])
    filler = fill(fs, leave=256 << 10)
    write_until_refused(r, acked, "k")
    db = os.path.join(s.data, "coffer.db")
    with open(db, "rb") as f:
        headers = f.read(2 * PAGE)
    flip(db, 200)
    flip(db, PAGE + 200)
    os.unlink(filler)
    ev = su.wait_for(lambda: [e for e in events(coffer_bin, s.data, 1004)
                              if e["fields"].get("WHILE") == "reopening the store to resume writes"],
                     20, what="event 1004 for the failed reopen")[-1]
    assert ev["fields"]["CODE_NAME"] == "COFFER_E_HEADER_CORRUPT", ev
    for cmd in (("GET", "pre00001"), ("SET", "x", "y")):
        c = Resp(s.sock)
        e = c.cmd(*cmd)
        assert isinstance(e, RespError) and e.endswith("(COFFER_E_HEADER_CORRUPT)"), e
        assert "could not be reopened" in e and db in e, e
        c.close()
    assert s.alive()
    with open(db, "r+b") as f:  # repaired
        f.write(headers)
    wait_event(coffer_bin, s.data, 1005)
    check_all(s.redis(), acked)
    assert s.redis().set("x", "y") is True
    reliability("diskfull", where="reopen failing, then repaired", refused=True, resumed=True, lost=0)


def big_store(s, n=2000, prefix="b"):
    """N keys with 1 KiB of random (incompressible) data each."""
    r = s.redis()
    acked = {}
    p = r.pipeline(transaction=False)
    for i in range(n):
        k = "%s%06d" % (prefix, i)
        acked[k] = os.urandom(1024)
        p.set(k, acked[k])
    p.execute()
    return acked


def test_disk_full_in_backup_output_leaves_no_set_and_no_trace_in_the_store(tmpfs, mk, coffer_bin, cofferd_bin):
    """(test_backup_failures.py covers a file set without compression; this
    is the directory format with zstd, and checks that the failed full
    backup changed nothing in the store's backup history.)"""
    s = mk()
    acked = big_store(s)
    work = mk.scratch()
    full = os.path.join(work, "a-full")
    ok = coffer(coffer_bin, "backup", "--format", "dir", "-o", full, sock=s.sock)
    assert ok.rc == 0, ok
    small = tmpfs("1m")
    acked.update(big_store(s, 1000, "c"))
    failed = os.path.join(small, "b-full")
    b = coffer(coffer_bin, "backup", "--format", "dir", "--compress", "zstd:3", "-o", failed, sock=s.sock)
    named_error(b, CODES["DISK_FULL"], small)
    assert os.listdir(small) == [], "a failed backup left %s" % os.listdir(small)
    # The store still records A as its last full: an incremental chains on it.
    acked.update(big_store(s, 500, "d"))
    incr = os.path.join(work, "c-incr")
    ok = coffer(coffer_bin, "backup", "--type", "incremental", "--format", "dir", "-o", incr, sock=s.sock)
    assert ok.rc == 0, ok
    v = coffer(coffer_bin, "verify", full, incr)
    assert v.rc == 0 and "ok: chain of 2 sets" in v.out, v
    target = os.path.join(work, "restored")
    ok = coffer(coffer_bin, "restore", full, incr, "--target", target)
    assert ok.rc == 0, ok
    for path in (full, incr):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
        for root, dirs, files in os.walk(path):
            for f in files:
                assert stat.S_IMODE(os.stat(os.path.join(root, f)).st_mode) == 0o600, f
    s2 = su.Server(cofferd_bin, target, sock=os.path.join(work, "r.sock"))
    try:
        check_all(s2.redis(), acked)
    finally:
        assert s2.stop() == 0
    reliability("diskfull", where="backup output", refused=True, resumed=True, lost=0)


def test_disk_full_in_a_restore_leaves_nothing_that_looks_like_a_store(tmpfs, mk, coffer_bin, cofferd_bin):
    s = mk(args=["--config", config(mk.scratch(), log_file_size="1M")])
    acked = big_store(s)
    work = mk.scratch()
    full = os.path.join(work, "full.cbk")
    ok = coffer(coffer_bin, "backup", "--compress", "zstd", "-o", full, sock=s.sock)
    assert ok.rc == 0, ok
    fs = tmpfs("1m")
    target = os.path.join(fs, "store")
    r = coffer(coffer_bin, "restore", full, "--target", target)
    named_error(r, CODES["DISK_FULL"], target)
    left = sorted(os.listdir(target)) if os.path.isdir(target) else []
    assert set(left) <= {"events", "cofferd.lock"}, "a failed restore left %s" % left
    c = coffer(coffer_bin, "check", target)
    assert c.rc != 0 and "coffer.db" in c.err, c
    ev = events(coffer_bin, target, 1302)
    assert ev and ev[-1]["fields"]["CODE_NAME"] == "COFFER_E_DISK_FULL", ev
    # With room, the same restore into the same target works.
    subprocess.run(["mount", "-o", "remount,size=64m", fs], check=True, timeout=60)
    ok = coffer(coffer_bin, "restore", full, "--target", target)
    assert ok.rc == 0, ok
    s2 = su.Server(cofferd_bin, target, sock=os.path.join(work, "r.sock"))
    try:
        check_all(s2.redis(), acked)
    finally:
        assert s2.stop() == 0
    reliability("diskfull", where="restore target", refused=True, resumed=True, lost=0)


# ---------------------------------------------------------------- 2. damage


def make_store(cofferd_bin, d, kill, keys=3000, log_file_size=None):
    """A store in D/data written by cofferd: KEYS keys k000000.. (values
    from value_of); stopped cleanly, or killed (so that the next start
    replays the whole log). Returns the acknowledged {key: value}."""
    args = []
    if log_file_size:
        args = ["--config", config(d, log_file_size=log_file_size)]
    s = su.Server(cofferd_bin, os.path.join(d, "data"), sock=os.path.join(d, "s.sock"), args=args)
    r = s.redis()
    acked = {}
    for i in range(0, keys, 50):
        p = r.pipeline(transaction=False)
        for j in range(i, min(keys, i + 50)):
            k = "k%06d" % j
            acked[k] = value_of(k)
            p.set(k, acked[k])
        p.execute()  # 50 keys a commit: many commits, several generations
    if kill:
        s.kill9()
    else:
        assert s.stop() == 0
    return acked


def value_of(k):
    return ("%s-" % k * 40).encode()


@pytest.fixture(scope="module")
def stores(cofferd_bin, tmp_path_factory):
    """Two pristine stores, copied by each case: 'clean' (stopped cleanly)
    and 'killed' (kill -9 after writing 3+ log generations of 1 MiB)."""
    base = str(tmp_path_factory.mktemp("stores"))
    out = {}
    for name, kill in (("clean", False), ("killed", True)):
        d = os.path.join(base, name)
        os.makedirs(d)
        out[name] = (os.path.join(d, "data"), make_store(cofferd_bin, d, kill, keys=6000,
                                                       log_file_size="1M"))
    return out


def copy_store(stores, which, dst):
    src, acked = stores[which]
    shutil.copytree(src, dst, symlinks=True)
    for junk in ("cofferd.sock",):
        if os.path.exists(os.path.join(dst, junk)):
            os.unlink(os.path.join(dst, junk))
    return dst, dict(acked)


def start_or_fail(cofferd_bin, data, sock):
    """Start cofferd on DATA: (Server, None) if it runs, (None, Result) if it
    exited (its stderr and status as a Result)."""
    s = su.Server(cofferd_bin, data, sock=sock, start=False)
    try:
        s.start(timeout=30)
        return s, None
    except AssertionError:
        rc = s.proc.wait(timeout=30)
        s.logf.close()

        class P:
            returncode, stdout, stderr = rc, "", s.log()
        return None, Result(P)


def log_records(coffer_bin, data):
    """[(generation, offset, type)] from coffer dump logs."""
    r = coffer(coffer_bin, "dump", "logs", data)
    assert r.rc == 0, r
    recs = []
    for line in r.out.splitlines():
        m = re.match(r"^(\d{10}):(\d{10})\s+(\S+)", line)
        if m:
            recs.append((int(m.group(1)), int(m.group(2)), m.group(3)))
    return recs


def gets(r, acked):
    """GET every key: {key: error text} for those that failed."""
    bad = {}
    for k in sorted(acked):
        try:
            v = r.get(k)
            assert v == acked[k], "key %s has %r, not what was written" % (k, v)
        except redis.ResponseError as e:
            bad[k] = str(e)
    return bad


def test_damaged_data_page(stores, tmp_path, coffer_bin, cofferd_bin):
    data, acked = copy_store(stores, "clean", str(tmp_path / "d"))
    db = os.path.join(data, "coffer.db")
    npages = os.path.getsize(db) // PAGE
    page = npages // 2
    flip(db, page * PAGE + 3000)
    c = coffer(coffer_bin, "check", data)
    named_error(c, CODES["PAGE_CORRUPT"], db)
    assert re.search(r"^problem: page %d: page %d of \"%s\" failed its checksum: stored 0x[0-9a-f]+, "
                     r"computed 0x[0-9a-f]+$" % (page, page, re.escape(db)), c.out, re.M), c
    assert "1 bad checksums" in c.out, c
    # reported once: the tree walk does not report the page again
    assert len(re.findall(r"^problem: .*failed its checksum", c.out, re.M)) == 1, c
    s, fail = start_or_fail(cofferd_bin, data, str(tmp_path / "s.sock"))
    assert fail is None, fail
    try:
        bad = gets(s.redis(), acked)
        assert bad, "no read met the damaged page %d" % page
        for k, e in bad.items():
            assert re.fullmatch(r'page %d of "%s" failed its checksum: stored 0x[0-9a-f]+, computed '
                                r'0x[0-9a-f]+ \(COFFER_E_PAGE_CHECKSUM\)' % (page, re.escape(db)), e), e
        assert len(bad) < len(acked) // 4, "one page took %d keys with it" % len(bad)
        assert s.redis().set("new", "x") is True  # the rest of the store works
    finally:
        assert s.stop() == 0
    reliability("corruption", object="data page (bit flip)", detected=True, named=True)


def test_damaged_page_read_by_a_client_is_an_event(stores, tmp_path, coffer_bin, cofferd_bin):
    data, acked = copy_store(stores, "clean", str(tmp_path / "d"))
    db = os.path.join(data, "coffer.db")
    page = os.path.getsize(db) // PAGE // 2
    flip(db, page * PAGE + 3000)
    s = su.Server(cofferd_bin, data, sock=str(tmp_path / "s.sock"))
    try:
        bad = gets(s.redis(), acked)
        assert len(bad) > 1, "the damaged page %d was met %d time(s)" % (page, len(bad))
        ev = su.wait_for(lambda: events(coffer_bin, data, 1100), 1, what="event 1100")
        f = ev[-1]["fields"]
        assert f["PAGE"] == str(page) and f["FILE"] == db, f
        assert f["CODE_NAME"] == "COFFER_E_PAGE_CHECKSUM", f
        m = re.search(r"stored (0x[0-9a-f]+), computed (0x[0-9a-f]+)", ev[-1]["message"])
        assert m and int(f["STORED"], 16) == int(m.group(1), 16) and \
            int(f["COMPUTED"], 16) == int(m.group(2), 16) and f["STORED"] != f["COMPUTED"], ev[-1]
        # Once per page, not once per read: every read of the page failed
        # (each GET above and a second pass now); the event is written
        # before the reader gets its error, so the count is final here.
        assert gets(s.redis(), acked) == bad
        assert len(events(coffer_bin, data, 1100)) == 1, events(coffer_bin, data, 1100)
    finally:
        s.stop()


def test_database_file_cut_short(stores, tmp_path, coffer_bin, cofferd_bin):
    data, acked = copy_store(stores, "clean", str(tmp_path / "d"))
    db = os.path.join(data, "coffer.db")
    npages = os.path.getsize(db) // PAGE
    keep = npages * 2 // 3
    os.truncate(db, keep * PAGE + 1000)  # a partial page at the end
    c = coffer(coffer_bin, "check", data)
    named_error(c, CODES["PAGE_CORRUPT"], db)
    assert "problem: page %d: the file size %d is not a multiple of the page size %d" % (
        keep, keep * PAGE + 1000, PAGE) in c.out, c
    assert "the meta page counts %d pages but the file holds %d" % (npages, keep) in c.out, c
    s, fail = start_or_fail(cofferd_bin, data, str(tmp_path / "s.sock"))
    assert fail is None, fail
    try:
        bad = gets(s.redis(), acked)
        assert bad
        for e in bad.values():
            m = re.match(r'page (\d+) of "%s" (is referenced but was never written|.*) \(COFFER_E_PAGE_(CORRUPT|CHECKSUM)\)$'
                         % re.escape(db), e)
            assert m and int(m.group(1)) >= keep, e
    finally:
        assert s.stop() == 0
    reliability("corruption", object="database file truncated", detected=True, named=True)


def test_one_header_copy_damaged_is_repaired(stores, tmp_path, coffer_bin, cofferd_bin):
    data, acked = copy_store(stores, "clean", str(tmp_path / "d"))
    db = os.path.join(data, "coffer.db")
    flip(db, 200)  # copy A, page 0
    c = coffer(coffer_bin, "check", data)
    named_error(c, CODES["PAGE_CORRUPT"], db)
    assert "problem: page 0: header copy A (page 0) is damaged; copy B is intact" in c.out, c
    d = coffer(coffer_bin, "dump", "header", data)
    assert re.search(r"header copies\s+A DAMAGED, B ok", d.out), d
    s = su.Server(cofferd_bin, data, sock=str(tmp_path / "s.sock"))
    try:
        check_all(s.redis(), acked)
    finally:
        assert s.stop() == 0
    ev = events(coffer_bin, data, 1101)
    assert ev and ev[-1]["fields"]["COPY"] == "A (page 0)" and ev[-1]["fields"]["FILE"] == db, ev
    assert coffer(coffer_bin, "check", data).rc == 0  # rewritten
    reliability("corruption", object="one header copy", detected=True, named=True)


def test_both_header_copies_damaged(stores, tmp_path, coffer_bin, cofferd_bin):
    data, _ = copy_store(stores, "clean", str(tmp_path / "d"))
    db = os.path.join(data, "coffer.db")
    flip(db, 200)
    flip(db, PAGE + 200)
    c = coffer(coffer_bin, "check", data)
    named_error(c, CODES["HEADER_CORRUPT"], db, "page 0 of", "page 1 of")
    s, fail = start_or_fail(cofferd_bin, data, str(tmp_path / "s.sock"))
    assert s is None, "cofferd started on a store without a valid header"
    named_error(fail, CODES["HEADER_CORRUPT"], db, "page 0 of", "page 1 of")
    ev = events(coffer_bin, data, 1002)
    assert ev and ev[-1]["fields"]["CODE_NAME"] == "COFFER_E_HEADER_CORRUPT", ev
    reliability("corruption", object="both header copies", detected=True, named=True)


def middle_record(recs, gen):
    """A record in the middle of generation GEN."""
    mine = [x for x in recs if x[0] == gen]
    assert len(mine) > 10, "generation %d has %d records" % (gen, len(mine))
    return mine[len(mine) // 2]


def test_damaged_log_record_not_at_the_end(stores, tmp_path, coffer_bin, cofferd_bin):
    data, _ = copy_store(stores, "killed", str(tmp_path / "d"))
    recs = log_records(coffer_bin, data)
    gens = sorted({g for g, _, _ in recs})
    assert len(gens) >= 3, gens
    gen, off, _ = middle_record(recs, gens[1])
    path = os.path.join(data, "log", "%010d.log" % gen)
    flip(path, off + 20)
    s, fail = start_or_fail(cofferd_bin, data, str(tmp_path / "s.sock"))
    assert s is None, "cofferd started on a log damaged in its middle"
    named_error(fail, CODES["LOG_CHECKSUM"], path, "generation=%d offset=%d" % (gen, off),
                "not at the end of the log")
    d = coffer(coffer_bin, "dump", "logs", data)
    named_error(d, CODES["LOG_CHECKSUM"], "generation %d, offset %d" % (gen, off))
    r = coffer(coffer_bin, "recover", data)
    named_error(r, CODES["LOG_CHECKSUM"], "generation %d, offset %d" % (gen, off))
    reliability("corruption", object="log record (middle of the log)", detected=True, named=True)


def test_damaged_log_record_in_the_last_generation(stores, tmp_path, coffer_bin, cofferd_bin):
    """A damaged record with valid COMMITs after it in the last generation
    is damage, not a torn tail (log_read.c R2): cofferd refuses to start and
    names the record and the COMMIT after it (event 1002), dump and
    recover say the same, and recover --until at the record accepts the
    loss explicitly."""
    data, acked = copy_store(stores, "killed", str(tmp_path / "d"))
    recs = log_records(coffer_bin, data)
    last = max(g for g, _, _ in recs)
    gen, off, _ = middle_record(recs, last)
    nxt = [o for g, o, t in recs if g == gen and o > off and t == "COMMIT"][0]
    path = os.path.join(data, "log", "%010d.log" % gen)
    flip(path, off + 20)
    s, fail = start_or_fail(cofferd_bin, data, str(tmp_path / "s.sock"))
    if s is not None:
        s.stop()
    assert s is None, "cofferd started on a log damaged in the middle of its last generation"
    named_error(fail, CODES["LOG_CHECKSUM"], path, "generation %d, offset %d" % (gen, off),
                "generation=%d offset=%d" % (gen, off), "not at the end of the log",
                "follows at %010d:%010d" % (gen, nxt))
    ev = events(coffer_bin, data, 1002)
    assert ev and ev[-1]["fields"]["CODE_NAME"] == "COFFER_E_LOG_CHECKSUM", ev
    d = coffer(coffer_bin, "dump", "logs", data)
    named_error(d, CODES["LOG_CHECKSUM"], "generation %d, offset %d" % (gen, off))
    r = coffer(coffer_bin, "recover", data)
    named_error(r, CODES["LOG_CHECKSUM"], "generation %d, offset %d" % (gen, off))
    reliability("corruption", object="log record (middle of the last generation)", detected=True,
                named=True)
    # The operator's way out: recover up to the damaged record, losing the rest.
    r = coffer(coffer_bin, "recover", "--until", "%d:%d" % (gen, off), data)
    assert r.rc == 0, r
    s = su.Server(cofferd_bin, data, sock=str(tmp_path / "s2.sock"))
    try:
        keys = sorted(acked)  # committed in this order
        assert all(s.redis().get(k) == acked[k] for k in keys[:100])
        assert s.redis().get(keys[-1]) is None  # after the damaged record
    finally:
        assert s.stop() == 0


def test_damaged_last_record_is_a_torn_tail(stores, tmp_path, coffer_bin, cofferd_bin):
    """A damaged last record cannot be told from a torn write: the log ends
    before it, event 1102 names it, every commit before it is there."""
    data, acked = copy_store(stores, "killed", str(tmp_path / "d"))
    recs = log_records(coffer_bin, data)
    gen, off, typ = recs[-1]
    assert typ == "COMMIT"
    flip(os.path.join(data, "log", "%010d.log" % gen), off + 20)
    s = su.Server(cofferd_bin, data, sock=str(tmp_path / "s.sock"))
    try:
        last = sorted(acked)[-50:]  # the last commit's keys
        for k in last:
            del acked[k]
        check_all(s.redis(), acked)
        assert s.redis().get(last[-1]) is None
    finally:
        assert s.stop() == 0
    ev = events(coffer_bin, data, 1102)
    assert ev and ev[-1]["fields"]["TORN_AT"] == "%d:%d" % (gen, off), ev
    reliability("corruption", object="log record (the last one)", detected=True, named=True)


def test_log_generation_cut_short(stores, tmp_path, coffer_bin, cofferd_bin):
    data, _ = copy_store(stores, "killed", str(tmp_path / "d"))
    recs = log_records(coffer_bin, data)
    gens = sorted({g for g, _, _ in recs})
    gen, off, _ = middle_record(recs, gens[1])
    path = os.path.join(data, "log", "%010d.log" % gen)
    os.truncate(path, off + 100)
    s, fail = start_or_fail(cofferd_bin, data, str(tmp_path / "s.sock"))
    assert s is None, "cofferd started on a log generation cut short"
    named_error(fail, CODES["LOG_CORRUPT"], path, "generation=%d" % gen, "not at the end of the log")
    reliability("corruption", object="log generation truncated (not the last)", detected=True, named=True)


def test_last_log_generation_cut_short(stores, tmp_path, coffer_bin, cofferd_bin):
    """A generation is created at its full size before it is named, so one
    shorter than its header says is damage even when it is the last
    (log_read.c R2a), not a torn tail."""
    data, acked = copy_store(stores, "killed", str(tmp_path / "d"))
    recs = log_records(coffer_bin, data)
    last = max(g for g, _, _ in recs)
    gen, off, _ = middle_record(recs, last)
    path = os.path.join(data, "log", "%010d.log" % gen)
    size = os.path.getsize(path)
    os.truncate(path, off + 100)
    s, fail = start_or_fail(cofferd_bin, data, str(tmp_path / "s.sock"))
    if s is not None:
        s.stop()
    assert s is None, "cofferd started on a last log generation cut short"
    named_error(fail, CODES["LOG_CORRUPT"], path, "generation=%d" % gen, "cut short",
                "its header says %d bytes, the file has %d" % (size, off + 100))
    ev = events(coffer_bin, data, 1002)
    assert ev and ev[-1]["fields"]["CODE_NAME"] == "COFFER_E_LOG_CORRUPT", ev
    d = coffer(coffer_bin, "dump", "logs", data)
    named_error(d, CODES["LOG_CORRUPT"], path, "cut short")
    r = coffer(coffer_bin, "recover", data)
    named_error(r, CODES["LOG_CORRUPT"], path, "cut short")
    reliability("corruption", object="last log generation truncated", detected=True, named=True)


def test_damaged_log_header(stores, tmp_path, coffer_bin, cofferd_bin):
    data, _ = copy_store(stores, "killed", str(tmp_path / "d"))
    gens = sorted(os.listdir(os.path.join(data, "log")))
    path = os.path.join(data, "log", gens[1])
    flip(path, 30)
    s, fail = start_or_fail(cofferd_bin, data, str(tmp_path / "s.sock"))
    assert s is None
    named_error(fail, CODES["LOG_CORRUPT"], path, "header")
    reliability("corruption", object="log generation header", detected=True, named=True)


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_damaged_checkpoint_file(stores, tmp_path, coffer_bin, cofferd_bin, how):
    data, acked = copy_store(stores, "killed", str(tmp_path / "d"))
    ck = os.path.join(data, "checkpoint")
    if how == "flip":
        flip(ck, 30)
    else:
        os.truncate(ck, 20)
    d = coffer(coffer_bin, "dump", "checkpoint", data)
    named_error(d, CODES["CHECKPOINT_CORRUPT"], ck)
    s = su.Server(cofferd_bin, data, sock=str(tmp_path / "s.sock"))
    try:
        check_all(s.redis(), acked)
    finally:
        assert s.stop() == 0
    ev = events(coffer_bin, data, 1105)
    assert ev and ev[-1]["fields"]["FILE"] == ck and ev[-1]["fields"]["CODE_NAME"] == "COFFER_E_CHECKPOINT_CORRUPT", ev
    assert re.fullmatch(r"\d+:\d+", ev[-1]["fields"]["REDO_LSN"]), ev
    reliability("corruption", object="checkpoint file (%s)" % how, detected=True, named=True)


# ---- backup sets (format: the top of src/backup/archive.c)

_xxh = None


def xxh3(b, seed=0):
    """XXH3-64 through the system's libxxhash (a build dependency)."""
    global _xxh
    if _xxh is None:
        _xxh = ctypes.CDLL("libxxhash.so.0")
        _xxh.XXH3_64bits_withSeed.restype = ctypes.c_uint64
        _xxh.XXH3_64bits_withSeed.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint64]
    return _xxh.XXH3_64bits_withSeed(bytes(b), len(b), seed)


REC = struct.Struct("<4sBBHIIIIQQ")  # record header, 40 bytes
FILE_REC, DATA_REC, END_REC, MANIFEST_REC = 1, 2, 3, 4


class Rec:
    def __init__(self, off, kind, comp, index, block, raw, stored, xraw, payload):
        self.off, self.kind, self.comp, self.index, self.block = off, kind, comp, index, block
        self.raw, self.stored, self.xraw, self.payload = raw, stored, xraw, payload

    def encode(self, raw=None, stored=None):
        """The record with its checksums recomputed (RAW / STORED: lengths to
        claim instead of the payload's)."""
        if self.comp == 0:
            self.xraw = xxh3(self.payload)
        head = struct.pack("<4sBBHIIIIQ", b"CFRC", self.kind, self.comp, 0, self.index, self.block,
                           (len(self.payload) if self.comp == 0 else self.raw) if raw is None else raw,
                           len(self.payload) if stored is None else stored, self.xraw)
        return head + struct.pack("<Q", xxh3(head)) + self.payload


def parse_set(data):
    """The records of a one-file set."""
    assert data[:8] == b"COFFERBK", data[:8]
    recs, off = [], 24
    while off < len(data) - 40:
        magic, kind, comp, _, index, block, raw, stored, xraw, _ = REC.unpack_from(data, off)
        assert magic == b"CFRC", (off, magic)
        recs.append(Rec(off, kind, comp, index, block, raw, stored, xraw, data[off + 40:off + 40 + stored]))
        off += 40 + stored
    return recs


def archive_header(kind=1):
    h = b"COFFERBK" + struct.pack("<II", 1, kind)
    return h + struct.pack("<Q", xxh3(h))


def build_set(recs, trailer_len=None):
    """A one-file set from records (checksums, manifest offset, trailer
    recomputed). TRAILER_LEN: the manifest length the trailer claims."""
    out = bytearray(archive_header())
    mf_off, mf = 0, b""
    for r in recs:
        if r.kind == MANIFEST_REC:
            mf_off, mf = len(out), r.payload
        out += r.encode()
    t = b"CFTRAILR" + struct.pack("<QQQ", mf_off, len(mf) if trailer_len is None else trailer_len, xxh3(mf))
    return bytes(out + t + struct.pack("<Q", xxh3(t)))


def manifest_rename(payload, old, new):
    """The manifest with stored file OLD renamed NEW."""
    h, v = struct.unpack_from("<HH", payload, 112)
    pos = 120 + h + v
    out = bytearray(payload[:pos])
    while pos < len(payload):
        (n,) = struct.unpack_from("<H", payload, pos)
        name = payload[pos + 2:pos + 2 + n]
        rest = payload[pos + 2 + n:pos + 2 + n + 48]
        if name == old:
            name = new
        out += struct.pack("<H", len(name)) + name + rest
        pos += 2 + n + 48
    return bytes(out)


@pytest.fixture(scope="module")
def mkset_sets(tmp_path_factory):
    """A full and an incremental set made by build/tests/mkset (one file,
    zstd) and the same in the directory format."""
    mkset = os.path.join(BUILD, "tests", "mkset")
    d = str(tmp_path_factory.mktemp("sets"))
    out = {}
    for fmt, extra in (("file", ["--level", "3"]), ("dir", ["--format", "dir"])):
        full, incr = os.path.join(d, fmt + "-full"), os.path.join(d, fmt + "-incr")
        p = subprocess.run([mkset, "make", os.path.join(d, fmt + "-store"), full, incr] + extra,
                           capture_output=True, text=True, timeout=120 * SLOW)
        assert p.returncode == 0, p.stderr
        out[fmt] = (full, incr)
    return out


def damage_file_set(path, how):
    """Damage a one-file set; returns the strings the error must name."""
    data = open(path, "rb").read()
    recs = parse_set(data)
    if how == "data block":
        r = [x for x in recs if x.kind == DATA_REC][0]
        flip(path, r.off + 40 + r.stored // 2)
        return CODES["ARCHIVE_CORRUPT"], ['block 0 of "coffer.db" at offset %d' % r.off]
    if how == "record header":
        r = [x for x in recs if x.kind == FILE_REC][1]
        flip(path, r.off + 10)
        return CODES["ARCHIVE_CORRUPT"], ["record at offset %d" % r.off, "header"]
    if how == "end record":
        r = [x for x in recs if x.kind == END_REC][0]
        flip(path, r.off + 40 + 3)
        return CODES["ARCHIVE_CORRUPT"], ['end record of "coffer.db" at offset %d' % r.off]
    if how == "manifest":
        r = [x for x in recs if x.kind == MANIFEST_REC][0]
        flip(path, r.off + 40 + 50)
        return CODES["ARCHIVE_CORRUPT"], ["manifest at offset %d" % r.off]
    if how == "trailer":
        flip(path, len(data) - 30)
        return CODES["ARCHIVE_CORRUPT"], ["trailer at offset %d" % (len(data) - 40)]
    if how == "truncated":
        r = [x for x in recs if x.kind == DATA_REC][-1]
        os.truncate(path, r.off + 40 + 100)
        return CODES["ARCHIVE_TRUNCATED"], ["truncated"]
    raise AssertionError(how)


def damage_dir_set(path, how):
    blocks = os.path.join(path, "log", sorted(os.listdir(os.path.join(path, "log")))[0])
    if how == "block file":
        data = open(blocks, "rb").read()
        flip(blocks, len(data) // 2)
        return (CODES["ARCHIVE_CORRUPT"], CODES["DIGEST_MISMATCH"]), [blocks, "block"]
    if how == "missing block file":
        os.unlink(os.path.join(path, "coffer.db.blocks"))
        return CODES["ARCHIVE_TRUNCATED"], [os.path.join(path, "coffer.db.blocks"), "missing"]
    if how == "MANIFEST":
        flip(os.path.join(path, "MANIFEST"), 100)
        return CODES["ARCHIVE_CORRUPT"], [os.path.join(path, "MANIFEST"), "manifest"]
    if how == "truncated block file":
        os.truncate(os.path.join(path, "coffer.db.blocks"), 30000)
        return CODES["ARCHIVE_TRUNCATED"], [os.path.join(path, "coffer.db.blocks"), "offset 30000"]
    raise AssertionError(how)


SET_DAMAGE = [("file", h) for h in ("data block", "record header", "end record", "manifest",
                                    "trailer", "truncated")] + \
             [("dir", h) for h in ("block file", "missing block file", "MANIFEST", "truncated block file")]


@pytest.mark.parametrize("fmt,how", SET_DAMAGE, ids=["%s-%s" % x for x in SET_DAMAGE])
def test_damaged_backup_set(mkset_sets, tmp_path, coffer_bin, fmt, how):
    full, incr = mkset_sets[fmt]
    bad = str(tmp_path / "bad")
    if fmt == "file":
        shutil.copyfile(full, bad)
        code, names = damage_file_set(bad, how)
    else:
        shutil.copytree(full, bad)
        code, names = damage_dir_set(bad, how)
    codes = code if isinstance(code, tuple) else (code,)
    v = coffer(coffer_bin, "verify", bad, incr)
    assert v.rc in codes, v
    named_error(v, v.rc, 'backup set "%s"' % bad, *names)
    assert not v.out.startswith("ok: %s" % bad), v
    target = str(tmp_path / "target")
    r = coffer(coffer_bin, "restore", bad, incr, "--target", target)
    assert r.rc in codes, r
    named_error(r, r.rc, 'backup set "%s"' % bad, *names)
    left = set(os.listdir(target)) if os.path.isdir(target) else set()
    assert left <= {"events", "cofferd.lock"}, "a failed restore left %s" % left
    ev = events(coffer_bin, target, 1302) if os.path.isdir(target) else []
    assert not os.path.isdir(target) or (ev and ev[-1]["fields"]["CODE"] == str(r.rc)), ev
    # The good set beside it still restores.
    good = coffer(coffer_bin, "restore", full, incr, "--target", str(tmp_path / "good"))
    assert good.rc == 0, good
    reliability("corruption", object="backup set (%s): %s" % (fmt, how), detected=True, named=True)


# ---------------------------------------------------------------- 3. hostile input


def run_measured(cmd, stdin_data=None, timeout=60):
    """Run CMD with STDIN_DATA; (Result, seconds)."""
    t0 = time.monotonic()
    p = subprocess.run(cmd, input=stdin_data, capture_output=True, timeout=timeout * SLOW,
                       stdin=None if stdin_data is not None else subprocess.DEVNULL)
    secs = time.monotonic() - t0

    class P:
        returncode, stdout, stderr = p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    return Result(P), secs


def nothing_written(target, outside):
    left = set(os.listdir(target)) if os.path.isdir(target) else set()
    assert left <= {"events", "cofferd.lock"}, "the refused restore wrote %s" % left
    for p in outside:
        assert not os.path.lexists(p), "the restore wrote %s" % p


HOSTILE_NAMES = ["../../evil", "/tmp/coffer-hardening-evil", "log/../../evil", "log/0000000001.log/../x",
                 "log//0000000001.log", "./coffer.db", "log/0000000001.log\nx", "coffer.db\x7f", "a" * 300]


@pytest.mark.parametrize("mode", ["file", "stream"])
@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=["name%d" % i for i in range(len(HOSTILE_NAMES))])
def test_hostile_names_in_a_set_are_refused_before_anything_is_written(mkset_sets, tmp_path, coffer_bin,
                                                                      mode, name):
    full, _ = mkset_sets["file"]
    recs = parse_set(open(full, "rb").read())
    old = [r for r in recs if r.kind == FILE_REC][1].payload  # log/0000000001.log
    new = name.encode()
    for r in recs:
        if r.kind == FILE_REC and r.payload == old:
            r.payload = new
        if r.kind == MANIFEST_REC:
            r.payload = manifest_rename(r.payload, old, new)
    crafted = str(tmp_path / "crafted.set")
    with open(crafted, "wb") as f:
        f.write(build_set(recs))
    target = str(tmp_path / "a" / "b" / "target")
    outside = [str(tmp_path / "a" / "evil"), str(tmp_path / "evil"), "/tmp/coffer-hardening-evil"]
    if mode == "file":
        r = coffer(coffer_bin, "restore", crafted, "--target", target)
        v = coffer(coffer_bin, "verify", crafted)
    else:  # front to back: the FILE record comes before the manifest
        with open(crafted, "rb") as f:
            r = coffer(coffer_bin, "restore", "-", "--target", target, stdin=f)
        with open(crafted, "rb") as f:
            v = coffer(coffer_bin, "verify", "-", stdin=f)
    # A name too long for a FILE record is damage of the record; any other
    # is an unsafe path.
    code = CODES["ARCHIVE_CORRUPT"] if len(new) > 255 else CODES["UNSAFE_PATH"]
    named_error(r, code)
    named_error(v, code)
    nothing_written(target, outside)
    reliability("hostile", input="set entry name %r (%s)" % (name[:40], mode), refused=True,
                nothing_written=True)


def craft_sizes(full, how):
    recs = parse_set(open(full, "rb").read())
    data = [r for r in recs if r.kind == DATA_REC][0]
    out = bytearray(archive_header())
    trailer_len = None
    for r in recs:
        if r is data and how == "data raw length 2 GiB":
            out += r.encode(raw=0x7FFFFFFF)
        elif r is data and how == "data stored length 4 GiB":
            enc = r.encode(stored=0xFFFFFFF0)
            out += enc
        elif r.kind == END_REC and how == "file size 2^62" and r.index == 0:
            r.payload = struct.pack("<QQ", 1 << 62, 1 << 40) + r.payload[16:]
            out += r.encode()
        elif r.kind == MANIFEST_REC and how == "manifest file count 2^32-1":
            r.payload = r.payload[:76] + struct.pack("<I", 0xFFFFFFFF) + r.payload[80:]
            mf_off = len(out)
            out += r.encode()
        else:
            if r.kind == MANIFEST_REC:
                mf_off = len(out)
            out += r.encode()
    mf = [r for r in recs if r.kind == MANIFEST_REC][0].payload
    if how == "manifest length 1 TiB":
        trailer_len = 1 << 40
    t = b"CFTRAILR" + struct.pack("<QQQ", mf_off, len(mf) if trailer_len is None else trailer_len, xxh3(mf))
    return bytes(out + t + struct.pack("<Q", xxh3(t)))


HOSTILE_SIZES = {"data raw length 2 GiB": "a data block longer than 1 MiB",
                 "data stored length 4 GiB": "stored length is out of bounds",
                 "file size 2^62": "says 4611686018427387904 bytes",
                 "manifest file count 2^32-1": "more than 262144 files",
                 "manifest length 1 TiB": "manifest length out of bounds"}


@pytest.mark.parametrize("how", HOSTILE_SIZES)
def test_hostile_sizes_in_a_set_are_bounded(mkset_sets, tmp_path, coffer_bin, how):
    full, _ = mkset_sets["file"]
    crafted = str(tmp_path / "crafted.set")
    with open(crafted, "wb") as f:
        f.write(craft_sizes(full, how))
    target = str(tmp_path / "target")
    asan = SLOW > 1
    for cmd, stdin in (([coffer_bin, "restore", crafted, "--target", target], None),
                       ([coffer_bin, "restore", "-", "--target", target + "2"], open(crafted, "rb").read()),
                       ([coffer_bin, "verify", crafted], None)):
        r, secs = run_measured(cmd, stdin)
        assert r.rc in (CODES["ARCHIVE_CORRUPT"], CODES["ARCHIVE_TRUNCATED"], CODES["DIGEST_MISMATCH"]), r
        named_error(r, r.rc, 'backup set "', HOSTILE_SIZES[how])
        assert secs < 20 * SLOW, "%s took %.1f s" % (cmd, secs)
    nothing_written(target, [])
    nothing_written(target + "2", [])
    # Memory: the reader's bounds hold (checked with an address-space limit
    # outside sanitizer builds, which reserve terabytes of shadow memory).
    if not asan:
        p = subprocess.run(["prlimit", "--as=%d" % (256 << 20), coffer_bin, "verify", crafted],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode in (CODES["ARCHIVE_CORRUPT"], CODES["ARCHIVE_TRUNCATED"], CODES["DIGEST_MISMATCH"]), p.stderr
        assert "NOMEM" not in p.stderr, p.stderr
    reliability("hostile", input="set size field: %s" % how, refused=True, nothing_written=True)


def test_planted_restore_tmp_symlink_is_not_followed(mkset_sets, tmp_path, coffer_bin):
    full, incr = mkset_sets["file"]
    precious = tmp_path / "precious"
    (precious / "sub").mkdir(parents=True)
    (precious / "a.txt").write_text("keep")
    (precious / "sub" / "b.txt").write_text("keep")
    target = tmp_path / "target"
    target.mkdir()
    os.symlink(str(precious), str(target / ".restore-tmp"))
    r = coffer(coffer_bin, "restore", full, incr, "--target", str(target))
    survived = (precious / "a.txt").exists() and (precious / "sub" / "b.txt").exists()
    reliability("hostile", input="planted .restore-tmp symlink in a restore target",
                refused=survived, nothing_written=survived)
    assert survived, "the restore deleted files through a planted symbolic link"
    assert r.rc == 0, r  # the link was removed as a link; the restore went on
    assert not os.path.lexists(str(target / ".restore-tmp"))
    assert os.path.exists(str(target / "coffer.db"))


@pytest.mark.parametrize("what", ["cofferd.lock", "events"])
def test_planted_target_symlink_is_not_followed(what, mkset_sets, tmp_path, coffer_bin):
    """A restore target whose lock file (written and truncated by its
    holder) or event log directory is a symbolic link: refused, nothing
    written through the link."""
    full, incr = mkset_sets["file"]
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "a.txt").write_text("keep")
    aim = precious / "a.txt" if what == "cofferd.lock" else precious
    target = tmp_path / "target"
    target.mkdir()
    os.symlink(str(aim), str(target / what))
    r = coffer(coffer_bin, "restore", full, incr, "--target", str(target))
    if what == "cofferd.lock":
        named_error(r, CODES["PERMISSION"], str(target / what), "symbolic link")
    else:
        named_error(r, CODES["DIR_NOT_EMPTY"], '"events"')
    untouched = sorted(os.listdir(str(precious))) == ["a.txt"] and (precious / "a.txt").read_text() == "keep"
    assert untouched, "the restore wrote through the planted %s link" % what
    assert sorted(os.listdir(str(target))) == [what], os.listdir(str(target))
    reliability("hostile", input="planted %s symlink in a restore target" % what,
                refused=r.rc != 0, nothing_written=untouched)


def test_symlinked_set_output_is_not_followed(tmp_path, mk, coffer_bin):
    """coffer backup -o PATH where PATH is a (dangling) symbolic link: the
    set replaces the link itself, never writes where it points."""
    s = mk()
    s.redis().set("a", "b")
    aim = tmp_path / "aim.cbk"
    link = tmp_path / "link.cbk"
    os.symlink(str(aim), str(link))
    r = coffer(coffer_bin, "backup", "-o", str(link), sock=s.sock)
    assert not aim.exists(), "the set was written through the link"
    if r.rc == 0:
        assert not os.path.islink(str(link)) and stat.S_IMODE(os.stat(str(link)).st_mode) == 0o600
    reliability("hostile", input="backup output path is a dangling symlink", refused=True,
                nothing_written=not aim.exists())


def modes_under(d):
    out = {}
    for root, dirs, files in os.walk(d):
        for n in dirs + files:
            p = os.path.join(root, n)
            out[os.path.relpath(p, d)] = stat.S_IMODE(os.lstat(p).st_mode)
    return out


def test_file_modes(mk, coffer_bin, tmp_path):
    s = mk(unix=False)  # the default socket: DATA/cofferd.sock
    s.redis = lambda **kw: redis.Redis(unix_socket_path=os.path.join(s.data, "cofferd.sock"), **kw)
    s.sock = os.path.join(s.data, "cofferd.sock")
    put(s.redis(), {}, ["m%d" % i for i in range(100)])
    assert stat.S_IMODE(os.stat(s.data).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(s.sock).st_mode) == 0o660
    modes = modes_under(s.data)
    for name, want in (("coffer.db", 0o600), ("checkpoint", 0o600), ("cofferd.lock", 0o600),
                       ("events", 0o700)):
        assert modes[name] == want, "%s is %o" % (name, modes[name])
    for name, m in modes.items():
        if name.startswith("events/"):
            assert m == 0o600, "%s is %o" % (name, m)
    one = str(tmp_path / "one.cbk")
    assert coffer(coffer_bin, "backup", "-o", one, sock=s.sock).rc == 0
    assert stat.S_IMODE(os.stat(one).st_mode) == 0o600
    target = str(tmp_path / "restored")
    assert coffer(coffer_bin, "restore", one, "--target", target).rc == 0
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o700
    for name, m in modes_under(target).items():
        assert m in (0o600, 0o700), "restored %s is %o" % (name, m)
    reliability("hostile", input="file modes (data dir, socket, store files, sets, restored store)",
                refused=True, nothing_written=True)


def test_log_files_are_private(mk):
    s = mk()
    s.redis().set("a", "b")
    modes = modes_under(s.data)
    assert modes["log"] == 0o700, "log/ is %o" % modes["log"]
    for name, m in modes.items():
        if name.startswith("log/"):
            assert m == 0o600, "%s is %o" % (name, m)


def test_no_password_in_logs_or_events(mk, coffer_bin, tmp_path):
    good, wrong = "Correct-Horse-91c5", "Wrong-Battery-7d2e"
    pw = tmp_path / "pw"
    pw.write_text(good + "\n")
    s = mk(args=["--password-file", str(pw)], listen=["127.0.0.1:0"])
    host, port = s.tcp[0]
    for attempt in (["AUTH", wrong], ["AUTH", "default", wrong], ["HELLO", "3", "AUTH", "default", wrong]):
        c = Resp((host, port))
        e = c.cmd(*attempt)
        assert isinstance(e, RespError) and "COFFER_E_AUTH_FAILED" in e and wrong not in e, e
        c.close()
    c = Resp((host, port))
    assert c.cmd("AUTH", good) == "OK"
    assert c.cmd("SET", "k", "v") == "OK"
    c.close()
    # The backup client with a wrong password, over TCP.
    env = dict(os.environ, COFFER_PASSWORD=wrong)
    p = subprocess.run([coffer_bin, "--server", "%s:%d" % (host, port), "backup", "-o", str(tmp_path / "x.cbk")],
                       capture_output=True, text=True, env=env, timeout=60 * SLOW)
    assert p.returncode != 0 and wrong not in p.stderr + p.stdout, p.stderr
    su.wait_for(lambda: len(events(coffer_bin, s.data, 1011)) >= 3, what="events 1011")
    assert s.stop() == 0
    blobs = [("cofferd's output", open(s.log_path, "rb").read())]
    for root, _, files in os.walk(os.path.join(s.data, "events")):
        for f in files:
            blobs.append((os.path.join(root, f), open(os.path.join(root, f), "rb").read()))
    j = subprocess.run([coffer_bin, "events", "--data", s.data, "--json"], capture_output=True, timeout=60)
    blobs.append(("coffer events --json", j.stdout))
    for what, blob in blobs:
        for secret in (good, wrong):
            assert secret.encode() not in blob, "%s holds a password" % what
    reliability("hostile", input="passwords in the event log and cofferd's output after AUTH failures",
                refused=True, nothing_written=True)


def test_slow_and_idle_clients_are_bounded(mk):
    """A client sending a command one byte at a time, and idle connections:
    the server goes on serving the others; connections are limited by
    --max-clients. With the default deadlines a command taking 2 s to arrive
    is served (--request-timeout 60 s) and idle authenticated clients stay
    (--timeout 0, as in Redis); test_server_deadlines.py shows each deadline
    cutting what exceeds it."""
    s = mk(args=["--max-clients", "4"])
    slow = socket.socket(socket.AF_UNIX)
    slow.connect(s.sock)
    fast = Resp(s.sock)
    cmd = encode("SET", "slow", "x" * 20)
    worst = 0.0
    for i, b in enumerate(cmd):
        slow.send(bytes([b]))
        t0 = time.monotonic()
        assert fast.cmd("PING") == "PONG"
        worst = max(worst, time.monotonic() - t0)
        time.sleep(0.05)
    slow.settimeout(10 * SLOW)
    assert slow.recv(100) == b"+OK\r\n"
    assert worst < 1.0 * SLOW, "a PING took %.2f s beside a slow client" % worst
    idle = [Resp(s.sock) for _ in range(2)]  # 4 connections now
    extra = Resp(s.sock)
    e = extra.reply()
    assert isinstance(e, RespError) and "COFFER_E_LIMIT" in e, e
    assert extra.closed()
    time.sleep(2)
    for c in idle:  # still open: --timeout is 0 by default
        assert c.cmd("PING") == "PONG"
    reliability("hostile", input="slow client (1 byte per 50 ms) and idle clients", refused=True,
                nothing_written=True,
                deadline="bounded by max-clients; a command must arrive within --request-timeout "
                         "(60 s + 1 s per 64 KiB); idle clients: --timeout (default 0, as in Redis)",
                worst_ping_s=round(worst, 3))


def make_cert(d):
    key, crt = os.path.join(d, "key.pem"), os.path.join(d, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", key, "-out", crt], check=True, capture_output=True, timeout=120)
    return crt, key


def test_half_open_tls_handshakes_do_not_stop_others(mk, tmp_path):
    """Half-open TLS connections do not delay a real client, and are closed
    at the handshake deadline (--handshake-timeout, 1 s here)."""
    crt, key = make_cert(str(tmp_path))
    s = mk(args=["--tls-cert", crt, "--tls-key", key, "--max-clients", "6", "--handshake-timeout", "1"],
           listen=["127.0.0.1:0"])
    host, port = s.tcp[0]
    half = []
    t_half = time.monotonic()
    for n in (0, 5, 40):  # nothing, a record header, part of a ClientHello
        c = socket.create_connection((host, port), timeout=10)
        if n:
            c.sendall((b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64))[:n])
        half.append(c)
    t0 = time.monotonic()
    r = redis.Redis(host=host, port=port, ssl=True, ssl_ca_certs=crt, ssl_cert_reqs="required",
                    socket_timeout=30 * SLOW)
    assert r.ping() and r.set("tls", "ok") is True and r.get("tls") == b"ok"
    took = time.monotonic() - t0
    assert took < 5 * SLOW, took
    assert s.redis().ping()
    closed = 0
    for c in half:  # each closed at the deadline, without a byte (none can be sent)
        c.settimeout(10 * SLOW)
        try:
            closed += c.recv(1) == b""
        except ConnectionResetError:
            closed += 1
        except socket.timeout:
            pass
        c.close()
    took = time.monotonic() - t_half
    assert closed == 3, "%d of 3 half-open TLS connections closed" % closed
    assert 0.9 <= took < 10 * SLOW, took
    assert r.get("tls") == b"ok"  # the completed handshake has no deadline
    reliability("hostile", input="half-open TLS handshakes (3 connections)", refused=True,
                nothing_written=True,
                deadline="closed at --handshake-timeout (1 s here, default 10 s): 3 of 3 after %.1f s" % took)
