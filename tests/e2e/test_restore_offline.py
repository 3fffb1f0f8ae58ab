"""coffer verify / list / restore on backup sets made without a server.

tests/fault/mkset.c (build/tests/mkset) makes a store, a full set of it, an
incremental and a differential set of the later log, straight from the
store's files with the backup set writer; these tests drive the real
`coffer` program on them, as an operator would.
"""
import fcntl
import os
import re
import subprocess

import pytest

from conftest import BUILD


@pytest.fixture(scope="session")
def mkset_bin():
    path = os.path.join(BUILD, "tests", "mkset")
    if not os.access(path, os.X_OK):
        pytest.fail("%s is not built; run make first" % path)
    return path


def make_sets(mkset_bin, d, *extra):
    d = str(d)
    p = subprocess.run([mkset_bin, "make", os.path.join(d, "store"), os.path.join(d, "full.set"),
                        os.path.join(d, "incr.set"), os.path.join(d, "diff.set")] + list(extra),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    info = dict(line.split(" ", 1) for line in p.stdout.splitlines())
    return {"full": os.path.join(d, "full.set"), "incr": os.path.join(d, "incr.set"),
            "diff": os.path.join(d, "diff.set"), "mid": info["mid"], "keys": int(info["keys"]),
            "full_gens": info["full"], "incr_gens": info["incr"]}


@pytest.fixture(scope="module")
def sets(mkset_bin, tmp_path_factory):
    return make_sets(mkset_bin, tmp_path_factory.mktemp("sets"), "--level", "3")


@pytest.fixture(scope="module")
def dir_sets(mkset_bin, tmp_path_factory):
    return make_sets(mkset_bin, tmp_path_factory.mktemp("dsets"), "--format", "dir")


def check_keys(mkset_bin, target, lo, hi, present=True):
    p = subprocess.run([mkset_bin, "check", str(target), str(lo), str(hi),
                        "present" if present else "absent"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr


def test_verify_chain(run, sets):
    r = run("verify", sets["full"], sets["incr"])
    assert r.rc == 0, r
    lines = r.out.splitlines()
    a, b = sets["full_gens"].split(".."), sets["incr_gens"].split("..")
    assert re.fullmatch(r"ok: %s: full, \d+ files, \d+ bytes, generations %s\.\.%s"
                        % (re.escape(sets["full"]), a[0], a[1]), lines[0]), r
    assert re.fullmatch(r"ok: %s: incremental, \d+ files, \d+ bytes, generations %s\.\.%s"
                        % (re.escape(sets["incr"]), b[0], b[1]), lines[1]), r
    assert lines[2].startswith("ok: chain of 2 sets"), r
    r = run("verify", sets["full"], sets["diff"])
    assert r.rc == 0, r


def test_verify_wrong_order_and_two_bases(run, sets):
    r = run("verify", sets["incr"], sets["full"])
    assert r.rc == 192, r  # COFFER_E_CHAIN_BROKEN, after both sets verified
    assert "(COFFER_E_CHAIN_BROKEN)" in r.err and "cannot start a restore" in r.err
    r = run("verify", sets["full"], sets["diff"], sets["incr"])
    assert r.rc == 192 and "differential" in r.err, r


def test_list(run, coffer_bin, sets):
    r = run("list", sets["full"])
    assert r.rc == 0, r
    assert "type:        full" in r.out
    assert "parent id:   none" in r.out
    assert re.search(r"^set id:      [0-9a-f]{32}$", r.out, re.M)
    assert re.search(r"^signature:   [0-9a-f]{32}$", r.out, re.M)
    assert re.search(r"^started:     \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$", r.out, re.M)
    assert "page size:   4096" in r.out
    assert re.search(r"^redo:        \d+:\d+$", r.out, re.M)
    assert re.search(r"^  coffer\.db +\d+  sha256:[0-9a-f]{64}$", r.out, re.M)
    assert re.search(r"^  log/\d{10}\.log +\d+  sha256:[0-9a-f]{64}$", r.out, re.M)
    full_id = re.search(r"^set id:      (\S+)$", r.out, re.M).group(1)
    r = run("list", sets["incr"])
    assert r.rc == 0 and "type:        incremental" in r.out, r
    assert "parent id:   %s" % full_id in r.out
    # from standard input: read to the end, verified
    with open(sets["incr"], "rb") as f:
        p = subprocess.run([coffer_bin, "list", "-"], stdin=f, capture_output=True, text=True,
                           timeout=60)
    assert p.returncode == 0 and "type:        incremental" in p.stdout, p.stderr


def test_restore_full_and_incremental(run, sets, mkset_bin, tmp_path):
    target = tmp_path / "restored"
    r = run("restore", sets["full"], sets["incr"], "--target", target)
    assert r.rc == 0, r
    assert "restored %s: full set" % sets["full"] in r.out
    assert "hard recovery: log replayed to" in r.out
    assert oct(os.stat(target).st_mode & 0o777) == "0o700"
    assert not (target / ".restore-tmp").exists()
    c = run("check", target)
    assert c.rc == 0, c
    assert " 0 problems" in c.out
    check_keys(mkset_bin, target, 0, sets["keys"])
    ev = run("events", "--data", target)
    assert ev.rc == 0, ev
    assert "1300" in ev.out and "1301" in ev.out, ev


def test_restore_differential(run, sets, mkset_bin, tmp_path):
    target = tmp_path / "restored"
    r = run("restore", sets["full"], sets["diff"], "--target", target)
    assert r.rc == 0, r
    check_keys(mkset_bin, target, 0, sets["keys"])


def test_restore_directory_sets(run, dir_sets, mkset_bin, tmp_path):
    assert os.path.isdir(dir_sets["full"])
    assert os.path.exists(os.path.join(dir_sets["full"], "MANIFEST"))
    assert os.path.exists(os.path.join(dir_sets["full"], "coffer.db.blocks"))
    r = run("verify", dir_sets["full"], dir_sets["incr"])
    assert r.rc == 0, r
    target = tmp_path / "restored"
    r = run("restore", dir_sets["full"], dir_sets["incr"], "--target", target)
    assert r.rc == 0, r
    check_keys(mkset_bin, target, 0, dir_sets["keys"])


def test_restore_until_log_position(run, sets, mkset_bin, tmp_path):
    target = tmp_path / "pit"
    r = run("restore", sets["full"], sets["incr"], "--target", target, "--until", sets["mid"])
    assert r.rc == 0, r
    assert "stopped at the recovery target" in r.out
    half = sets["keys"] * 3 // 4  # mkset: mid is after key 1.5 N of 2 N
    check_keys(mkset_bin, target, 0, half)
    check_keys(mkset_bin, target, half, sets["keys"], present=False)


def test_restore_no_recover_then_recover(run, sets, mkset_bin, tmp_path):
    target = tmp_path / "later"
    r = run("restore", sets["full"], sets["incr"], "--target", target, "--no-recover")
    assert r.rc == 0, r
    assert "coffer recover" in r.out
    c = run("check", target)
    assert c.rc == 47 and "(COFFER_E_NEEDS_HARD_RECOVERY)" in c.err, c
    r = run("recover", target)
    assert r.rc == 0, r
    check_keys(mkset_bin, target, 0, sets["keys"])


def test_restore_from_stdin(coffer_bin, sets, mkset_bin, tmp_path):
    target = tmp_path / "piped"
    with open(sets["full"], "rb") as f:
        p = subprocess.run([coffer_bin, "restore", "-", sets["incr"], "--target", str(target)],
                           stdin=f, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    check_keys(mkset_bin, target, 0, sets["keys"])


def test_restore_refuses_bad_chains(run, sets, tmp_path):
    target = tmp_path / "t"
    for args in ([sets["incr"]], [sets["incr"], sets["full"]],
                 [sets["full"], sets["diff"], sets["incr"]], [sets["full"], sets["full"]]):
        r = run("restore", *args, "--target", target)
        assert r.rc == 192, r
        assert "(COFFER_E_CHAIN_BROKEN)" in r.err
        assert not target.exists()


def test_restore_refuses_non_empty_and_running(run, sets, tmp_path):
    target = tmp_path / "busy"
    target.mkdir()
    (target / "coffer.db").write_bytes(b"x")
    r = run("restore", sets["full"], "--target", target)
    assert r.rc == 25, r  # COFFER_E_DIR_NOT_EMPTY
    assert "coffer.db" in r.err
    (target / "coffer.db").unlink()
    # a process holds the data directory's lock, as cofferd does
    with open(target / "cofferd.lock", "w") as lock:
        lock.write("%d\ncofferd\n2026-11-25T19:00:00Z\n" % os.getpid())
        lock.flush()
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        r = run("restore", sets["full"], "--target", target)
        assert r.rc == 108, r  # COFFER_E_SERVER_RUNNING
        assert "cofferd" in r.err and str(os.getpid()) in r.err
    assert not (target / "coffer.db").exists()


def flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x40]))


def data_blocks(data):
    """(offset, block number, stored length) of each DATA record of an archive."""
    off, out = 24, []
    while off + 40 <= len(data) and data[off:off + 4] == b"CFRC":
        kind, blockno = data[off + 4], int.from_bytes(data[off + 12:off + 16], "little")
        stored = int.from_bytes(data[off + 20:off + 24], "little")
        if kind == 2:
            out.append((off, blockno, stored))
        off += 40 + stored
    return out


def test_damaged_and_truncated_sets(run, sets, tmp_path):
    bad = tmp_path / "bad.set"
    data = open(sets["full"], "rb").read()
    bad.write_bytes(data)
    off, blockno, stored = data_blocks(data)[0]
    flip(bad, off + 40 + stored // 2)
    r = run("verify", bad)
    assert r.rc in (190, 194), r  # ARCHIVE_CORRUPT (or the digest of a file)
    assert 'block %d of "coffer.db"' % blockno in r.err, r
    assert "offset %d " % off in r.err, r
    target = tmp_path / "t"
    r = run("restore", bad, sets["incr"], "--target", target)
    assert r.rc in (190, 194), r
    assert not (target / "coffer.db").exists()
    assert not (target / ".restore-tmp").exists()
    ev = run("events", "--data", target)
    assert "1302" in ev.out, ev
    # truncated
    bad.write_bytes(data[: len(data) - 100])
    r = run("verify", bad)
    assert r.rc == 191 and "(COFFER_E_ARCHIVE_TRUNCATED)" in r.err, r
    r = run("list", bad)
    assert r.rc == 191, r
    # the first bad set stops verify after the good ones were reported
    r = run("verify", sets["full"], bad)
    assert r.rc == 191 and r.out.startswith("ok: %s" % sets["full"]), r


def test_usage(run):
    r = run("restore", "x.set")
    assert r.rc == 220 and "--target" in r.err, r
    r = run("list")
    assert r.rc == 220, r
    r = run("verify")
    assert r.rc == 220, r
    r = run("restore", "x.set", "--target", "/tmp/x", "--until", "1:0", "--no-recover")
    assert r.rc == 220, r
