"""A backup client that lies: the real cofferd against a raw client that
takes a whole full backup and then breaks the protocol where it matters
most, at the confirmation that lets the server record the backup and
delete log generations.

The server must never record a backup or delete a generation on the word of
a confirmation that does not cover every generation it sent, or that is
not a well-formed CONFIRM frame: it answers an ERROR frame with the named
code, logs event 1202 with that code, deletes nothing, and serves the next
backup. A client that claims more than it was sent gets only what a true
confirmation gets: the generations of its own backup, never the live one.
"""
import os
import struct
import subprocess

import pytest

import server_util as su
from server_util import BKF, FakeBackupServer, Resp, read_frame

F = FakeBackupServer.frame


@pytest.fixture
def mk(cofferd_bin):
    yield from su.factory(cofferd_bin)


def load(sock, n=400):
    c = Resp(sock)
    for i in range(n):
        assert c.cmd("SET", "k%04d" % i, "v%04d" % i * 20) == "OK"
    c.close()


def status(coffer_bin, sock):
    p = subprocess.run([coffer_bin, "--server", "unix:" + sock, "status", "--raw"], capture_output=True,
                       text=True, timeout=60 * su.SLOW)
    assert p.returncode == 0, p.stderr
    return dict(line.split(":", 1) for line in p.stdout.splitlines() if ":" in line)


def logs(data):
    return sorted(n for n in os.listdir(os.path.join(data, "log")) if n.endswith(".log"))


def take_everything(sock):
    """COFFER.BACKUP full, then every frame up to the last generation's
    FILE_END: the server now waits for the confirmation. Returns the
    connection, the backup id (hex), and its generation range."""
    c = Resp(sock)
    assert c.cmd("COFFER.BACKUP", "1", "full") == "COFFER-BACKUP 1"
    t, info = read_frame(c)
    assert t == BKF["INFO"], t
    bid = info[8:24].hex()
    gen_first = struct.unpack_from("<I", info, 60)[0]
    gen_last, ends = None, 0
    for _ in range(1 << 20):  # bounded: 1 MiB frames, far more than the store
        t, p = read_frame(c)
        if t == BKF["ROLLED"]:
            gen_last = struct.unpack("<I", p)[0]
        elif t == BKF["FILE_END"] and gen_last is not None:
            ends += 1
            if ends == gen_last - gen_first + 1:
                return c, bid, gen_first, gen_last
        assert t in (BKF["FILE"], BKF["DATA"], BKF["ZEROS"], BKF["FILE_END"], BKF["ROLLED"]), t
    raise AssertionError("the backup stream did not end")


def confirm(gen):
    return F(BKF["CONFIRM"], struct.pack("<I", gen))


# name, the bytes sent in place of a true CONFIRM (from the range), the code the server answers
LIES = [
    ("confirms_one_generation_short", lambda g0, g1: confirm(g1 - 1), "COFFER_E_LOG_NOT_COPIED"),
    ("confirms_generation_zero", lambda g0, g1: confirm(0), "COFFER_E_LOG_NOT_COPIED"),
    ("confirm_of_eight_bytes", lambda g0, g1: F(BKF["CONFIRM"], struct.pack("<Q", g1)), "COFFER_E_PROTOCOL"),
    ("confirm_with_a_bad_checksum", lambda g0, g1: F(BKF["CONFIRM"], struct.pack("<I", g1), sum_delta=1),
     "COFFER_E_PROTOCOL"),
    ("data_instead_of_confirm", lambda g0, g1: F(BKF["DATA"], b"x" * 100), "COFFER_E_PROTOCOL"),
    ("frame_of_unknown_type", lambda g0, g1: F(77, struct.pack("<I", g1)), "COFFER_E_PROTOCOL"),
    ("frame_length_huge", lambda g0, g1: F(BKF["CONFIRM"], b"", length=0xFFFFFFF0), "COFFER_E_PROTOCOL"),
    ("not_a_frame_at_all", lambda g0, g1: b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "COFFER_E_PROTOCOL"),
]


@pytest.mark.parametrize("lie", LIES, ids=[x[0] for x in LIES])
def test_a_lying_confirmation_records_nothing_and_deletes_nothing(mk, coffer_bin, lie):
    name, make, code = lie
    s = mk()
    load(s.sock)
    before = logs(s.data)
    old = status(coffer_bin, s.sock)
    c, bid, g0, g1 = take_everything(s.sock)
    c.send(make(g0, g1))
    t, p = read_frame(c)
    assert t == BKF["ERROR"], "the server answered frame %d to %s" % (t, name)
    got = struct.unpack_from("<I", p)[0]
    expl = subprocess.run([coffer_bin, "explain", code], capture_output=True, text=True, timeout=30)
    assert got == int(expl.stdout.split()[0]), "ERROR frame with code %d, expected %s" % (got, code)
    assert c.closed(), "the server kept the connection open after the error"
    c.close()
    # Nothing recorded, no generation deleted.
    st = status(coffer_bin, s.sock)
    assert st["last_full_id"] == old["last_full_id"] != bid, st
    assert set(before) <= set(logs(s.data)), (before, logs(s.data))
    ev = [e for e in su.events(coffer_bin, s.data, 1202) if e["fields"].get("CODE_NAME") == code]
    assert ev, "no event 1202 with %s" % code
    # The next backup, a true one, works and is recorded.
    out = os.path.join(os.path.dirname(s.data), "next.cbk")
    p = subprocess.run([coffer_bin, "--server", "unix:" + s.sock, "backup", "-o", out, "--quiet"],
                       capture_output=True, text=True, timeout=120 * su.SLOW)
    assert p.returncode == 0, p.stderr
    assert status(coffer_bin, s.sock)["last_full_id"] not in ("none", old["last_full_id"])
    su.reliability("hostile", input="lying backup client: %s" % name.replace("_", " "), refused=True,
                   nothing_written=True)


def test_a_confirmation_beyond_the_backup_deletes_only_its_generations(mk, coffer_bin):
    """CONFIRM 0xFFFFFFFF: recorded as a true confirmation would be; the
    truncation stops at the backup's own generations, the live log stays,
    and every write is still there after a restart."""
    s = mk()
    load(s.sock)
    c, bid, g0, g1 = take_everything(s.sock)
    c.send(confirm(0xFFFFFFFF))
    t, p = read_frame(c)
    assert t == BKF["END"], "the server answered frame %d" % t
    c.close()
    assert status(coffer_bin, s.sock)["last_full_id"] == bid
    left = logs(s.data)
    assert left and all(int(n[:-4]) > g1 for n in left), (g1, left)
    r = Resp(s.sock)
    assert r.cmd("SET", "after", "yes") == "OK"
    r.close()
    assert s.stop() == 0
    s.start()
    r = Resp(s.sock)
    assert r.cmd("GET", "k0399") == b"v0399" * 20
    assert r.cmd("GET", "after") == b"yes"
    r.close()
    su.reliability("hostile", input="lying backup client: CONFIRM of generation 0xFFFFFFFF", refused=True,
                   nothing_written=True, bounded_by="the truncation stops at the backup's own generations")
