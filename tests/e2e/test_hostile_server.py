"""A server that lies: `coffer backup` against a fake cofferd that breaks
the backup protocol on purpose, one way per case.

A backup client trusts the bytes of a server it may not control (a remote
backup from another machine, KB Q245664's "backup from another server").
Whatever the server sends, the client must stop with a named error that says
what was wrong, leave no set and no temporary file behind, print no control
character the server chose, and never hang.

The fake (server_util.FakeBackupServer) speaks the real framing, with real
XXH3 frame checksums from Debian's libxxhash, so each case breaks exactly one
rule. The first case is the control: the same fake, well behaved, produces a
set that `coffer list` reads; without it, a broken fake would make every
hostile case pass for the wrong reason.
"""
import os
import re
import struct
import subprocess
import time

import pytest

from server_util import BKF, SLOW, FakeBackupServer, reliability, short_dir

PAGE = 8192
LOG1 = "log/0000000001.log"


def info(version=1, btype=1, page_size=PAGE, gen_first=1, npages=1):
    """An INFO payload (layout: cf_bkp_info_encode in src/backup/proto.c)."""
    p = bytearray(240)
    struct.pack_into("<II16s16s16sII", p, 0, version, btype, os.urandom(16), bytes(16), os.urandom(16),
                     page_size, gen_first)
    redo = gen_first << 32 | 4096  # replay starts in the first generation
    struct.pack_into("<QQqI", p, 64, npages, redo, int(time.time() * 1e6), 0)
    p[96:96 + 4] = b"fake"
    return bytes(p)


def file_(name, size):
    n = name.encode() if isinstance(name, str) else name
    return struct.pack("<QH", size, len(n)) + n


def u32(v):
    return struct.pack("<I", v)


F = FakeBackupServer.frame


def db_file(f, size=3 * PAGE, data=None):
    """INFO, then coffer.db of SIZE bytes (a set holds at least 3 pages)."""
    f.send(F(BKF["INFO"], info()), F(BKF["FILE"], file_("coffer.db", size)),
           F(BKF["DATA"], data if data is not None else b"\x5a" * size),
           F(BKF["FILE_END"], struct.pack("<Q", size)))


def finish(f):
    """The rolled log, generation 1, then CONFIRM -> END."""
    f.send(F(BKF["ROLLED"], u32(1)), F(BKF["FILE"], file_(LOG1, 4096)), F(BKF["DATA"], b"\x01" * 4096),
           F(BKF["FILE_END"], struct.pack("<Q", 4096)))
    got = f.recv_frame()
    if got and got[0] == BKF["CONFIRM"]:
        f.send(F(BKF["END"], bytes(16)))
        f.recv_frame()  # the client closes


def well_behaved(f):
    db_file(f)
    finish(f)


def then_wait(f):
    """After a lie: read until the client hangs up (it must, by itself)."""
    while f.recv_frame() is not None:
        pass


def lie(*frames):
    """INFO, then FRAMES."""
    def script(f):
        f.send(F(BKF["INFO"], info()), *frames)
        then_wait(f)
    return script


def first(frame):
    """FRAME in place of INFO."""
    def script(f):
        f.send(frame)
        then_wait(f)
    return script


def data_past_size(f):
    f.send(F(BKF["INFO"], info()), F(BKF["FILE"], file_("coffer.db", PAGE)), F(BKF["DATA"], b"x" * (2 * PAGE)))
    then_wait(f)


def zeros_past_size(f):
    f.send(F(BKF["INFO"], info()), F(BKF["FILE"], file_("coffer.db", PAGE)), F(BKF["ZEROS"], u32(PAGE + 1)))
    then_wait(f)


def short_file(f):
    f.send(F(BKF["INFO"], info()), F(BKF["FILE"], file_("coffer.db", 2 * PAGE)), F(BKF["DATA"], b"x" * PAGE),
           F(BKF["FILE_END"], struct.pack("<Q", 2 * PAGE)))
    then_wait(f)


def hangs_up_mid_file(f):
    f.send(F(BKF["INFO"], info()), F(BKF["FILE"], file_("coffer.db", 4 * PAGE)), F(BKF["DATA"], b"x" * PAGE))
    # the connection is closed here


def cut_mid_frame(f):
    whole = F(BKF["DATA"], b"x" * PAGE)
    f.send(F(BKF["INFO"], info()), F(BKF["FILE"], file_("coffer.db", PAGE)), whole[:100])


def log_before_roll(f):
    f.send(F(BKF["INFO"], info()), F(BKF["FILE"], file_(LOG1, 4096)))
    then_wait(f)


def wrong_generation(f):
    db_file(f)
    f.send(F(BKF["ROLLED"], u32(2)), F(BKF["FILE"], file_("log/0000000002.log", 4096)))
    then_wait(f)


def roll_before_first(f):
    f.send(F(BKF["INFO"], info(gen_first=5)), F(BKF["ROLLED"], u32(4)))
    then_wait(f)


def second_database(f):
    db_file(f)
    f.send(F(BKF["FILE"], file_("coffer.db", PAGE)))
    then_wait(f)


def descriptor_with_data(f):
    """Agreed fast path, then a DATA frame that carries a descriptor."""
    f.send(F(BKF["INFO"], info()), F(BKF["FILE"], file_("coffer.db", PAGE)))
    r, w = os.pipe()
    try:
        f.send(F(BKF["DATA"], b"x" * 16), fds=[r])
    finally:
        os.close(r)
        os.close(w)
    then_wait(f)


def error_frame(code, message, file_name=b"", peer=b""):
    p = struct.pack("<IiqqqH", code, 0, -1, -1, -1, len(message)) + message
    p += struct.pack("<H", len(file_name)) + file_name + struct.pack("<H", len(peer)) + peer
    return F(BKF["ERROR"], p)


ESC = b"\x1b]0;owned\x07\x1b[2J\x1b[31m"

# name, script, the answer to COFFER.BACKUP (None: the usual), catalog name (None: any),
# a phrase the error line must hold
CASES = [
    ("data_past_the_announced_size", data_past_size, None, "COFFER_E_PROTOCOL",
     "more data than the file's announced 8192 bytes"),
    ("zeros_past_the_announced_size", zeros_past_size, None, "COFFER_E_PROTOCOL",
     "more data than the file's announced 8192 bytes"),
    ("file_ends_short", short_file, None, "COFFER_E_PROTOCOL", "a file ended after 8192 of 16384 bytes"),
    ("frame_checksum_wrong", lie(F(BKF["FILE"], file_("coffer.db", PAGE), sum_delta=1)), None,
     "COFFER_E_PROTOCOL", "fails its checksum (damaged in transit)"),
    ("wrong_magic", lie(F(BKF["FILE"], file_("coffer.db", PAGE), magic=b"HTTP")), None, "COFFER_E_PROTOCOL",
     "not a backup frame (wrong magic)"),
    ("frame_length_huge", lie(F(BKF["DATA"], b"", length=0xFFFFFFF0)), None, "COFFER_E_PROTOCOL",
     "announced a frame of 4294967280 bytes"),
    ("frame_type_unknown", lie(F(99, b"abc")), None, "COFFER_E_PROTOCOL", "unknown type 99"),
    ("zeros_count_zero", lie(F(BKF["FILE"], file_("coffer.db", PAGE)), F(BKF["ZEROS"], u32(0))), None,
     "COFFER_E_PROTOCOL", "malformed ZEROS frame"),
    ("name_climbs_out", lie(F(BKF["FILE"], file_("../../etc/cron.d/x", 10))), None, None,
     "'..' component"),
    ("name_absolute", lie(F(BKF["FILE"], file_("/etc/passwd", 10))), None, None, "absolute path"),
    ("name_with_escape", lie(F(BKF["FILE"], file_(b"coffer\x1b[2J.db", 10))), None, None,
     "character outside"),
    ("file_frame_malformed", lie(F(BKF["FILE"], struct.pack("<QH", 10, 200) + b"short")), None,
     "COFFER_E_PROTOCOL", "malformed FILE frame"),
    ("info_impossible_page_size", first(F(BKF["INFO"], info(page_size=3000))), None, "COFFER_E_PROTOCOL",
     "impossible values"),
    ("info_newer_version", first(F(BKF["INFO"], info(version=9))), None, "COFFER_E_PROTOCOL_VERSION",
     "protocol version 9"),
    ("no_info_first", first(F(BKF["DATA"], b"x" * 10)), None, "COFFER_E_PROTOCOL", "expected INFO, got frame 3"),
    ("log_before_the_roll", log_before_roll, None, "COFFER_E_PROTOCOL",
     "log generation 1 before it rolled the log"),
    ("log_generation_skipped", wrong_generation, None, "COFFER_E_PROTOCOL",
     "sent log generation 2, expected 1"),
    ("roll_before_the_first_generation", roll_before_first, None, "COFFER_E_PROTOCOL",
     "rolled generation 4 before the first 5"),
    ("second_database_file", second_database, None, None, "coffer.db must be the first file"),
    ("descriptor_riding_on_data", descriptor_with_data, b"+COFFER-BACKUP 1 FASTPATH ZEROS\r\n",
     "COFFER_E_PROTOCOL", "passed a descriptor with frame 3"),
    ("hangs_up_mid_file", hangs_up_mid_file, None, "COFFER_E_CONNECTION_LOST", "closed the connection"),
    ("cut_mid_frame", cut_mid_frame, None, "COFFER_E_CONNECTION_LOST", "closed the connection"),
    ("error_frame_unknown_code", lie(error_frame(0x7fff0001, b"the disk is on fire")), None,
     "COFFER_E_PROTOCOL", "the disk is on fire"),
    ("error_frame_with_escapes", lie(error_frame(100, b"bad " + ESC + b"thing", b"f" + ESC, b"p" + ESC)), None,
     "COFFER_E_PROTOCOL", "bad "),
]


def code_number(coffer_bin, name):
    p = subprocess.run([coffer_bin, "explain", name], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return int(p.stdout.split()[0])


@pytest.fixture
def place():
    d = short_dir("cfh")
    yield d
    subprocess.run(["rm", "-rf", d], timeout=60)


def run_against(coffer_bin, place, script, reply=None, fmt="file"):
    sock = os.path.join(place, "fake.sock")
    out_dir = os.path.join(place, "out")
    os.makedirs(out_dir, exist_ok=True)
    fake = FakeBackupServer(sock, script, **({"reply": reply} if reply else {}))
    fake.start()
    out = os.path.join(out_dir, "set.cbk")
    p = subprocess.run([coffer_bin, "--server", "unix:" + sock, "backup", "--compress", "none", "--format", fmt,
                        "-o", out], capture_output=True, timeout=60 * SLOW, stdin=subprocess.DEVNULL)
    fake.join(30 * SLOW)
    assert not fake.is_alive(), "the fake server is still waiting: the client did not hang up"
    assert fake.bug is None, "the fake server's script broke: %r" % fake.bug
    return p, out, out_dir, fake


@pytest.mark.parametrize("fmt", ["file", "dir"])
def test_the_fake_server_itself_makes_a_set(coffer_bin, place, fmt):
    """Control: the fake, well behaved, is a server coffer accepts."""
    p, out, _, fake = run_against(coffer_bin, place, well_behaved, fmt=fmt)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    assert b"COFFER.BACKUP" in fake.request and b"ZEROS" in fake.request, fake.request
    assert fake.frames_in[:1] == [BKF["CONFIRM"]], fake.frames_in
    lst = subprocess.run([coffer_bin, "list", out], capture_output=True, text=True, timeout=60)
    assert lst.returncode == 0, lst.stderr
    assert "coffer.db" in lst.stdout and LOG1 in lst.stdout, lst.stdout


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_a_lying_server_gets_a_named_error_and_leaves_nothing(coffer_bin, place, case):
    name, script, reply, code_name, phrase = case
    p, out, out_dir, fake = run_against(coffer_bin, place, script, reply)
    err = p.stderr.decode("utf-8", errors="replace")
    ctx = "exit %d, stderr:\n%s" % (p.returncode, err)
    assert p.returncode != 0, "coffer accepted a lying server; " + ctx
    errors = [l for l in err.splitlines() if l.startswith("coffer: error: ")]
    assert len(errors) == 1, ctx
    line = errors[0]
    m = re.search(r"\((COFFER_E_[A-Z_]+)\)$", line)
    assert m, "the error line names no catalog code: " + ctx
    if code_name:
        assert m.group(1) == code_name, ctx
    assert p.returncode == code_number(coffer_bin, m.group(1)), ctx
    assert phrase in line, "the error does not say %r; %s" % (phrase, ctx)
    # Nothing the server chose reaches the operator's terminal raw.
    assert not re.search(rb"[\x00-\x08\x0b-\x1f\x7f]", p.stderr), "control bytes on stderr: %r" % p.stderr
    # No set, no temporary: the output directory is as it was.
    assert not os.path.lexists(out), ctx
    assert os.listdir(out_dir) == [], "left behind: %s; %s" % (os.listdir(out_dir), ctx)
    reliability("hostile", input="lying server, coffer backup: %s" % name.replace("_", " "), refused=True,
                nothing_written=True)


def test_status_from_a_lying_server_shows_no_control_characters(coffer_bin, place):
    """`coffer status` prints what the server says; a server's escapes must
    not reach the operator's terminal (`--raw` is the explicit way to get
    the bytes as sent)."""
    text = (b"process_id:4242\r\ncoffer_version:9.9\r\ndata_dir:/srv/" + ESC + b"data\r\n"
            b"listen:unix:/x\x1b[1A\x1b[2Kforged\r\nuptime_in_seconds:5\r\n")
    sock = os.path.join(place, "fake.sock")
    fake = FakeBackupServer(sock, lambda f: None, reply=b"$%d\r\n%s\r\n" % (len(text), text))
    fake.start()
    p = subprocess.run([coffer_bin, "--server", "unix:" + sock, "status"], capture_output=True, timeout=60 * SLOW)
    fake.join(30 * SLOW)
    assert fake.bug is None, "the fake server's script broke: %r" % fake.bug
    assert b"COFFER.STATUS" in fake.request, fake.request
    assert p.returncode == 0, p.stderr
    assert b"pid 4242" in p.stdout, p.stdout
    assert b"/srv/?]0;owned??[2J?[31mdata" in p.stdout, p.stdout
    assert not re.search(rb"[\x00-\x08\x0b-\x1f\x7f]", p.stdout), "control bytes on stdout: %r" % p.stdout
    reliability("hostile", input="lying server, coffer status: terminal escapes in its values", refused=True,
                nothing_written=True)
