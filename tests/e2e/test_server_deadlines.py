"""Connection deadlines (src/server/srv_loop.c, "Deadlines"): the TLS
handshake and AUTH (--handshake-timeout), a command being received
(--request-timeout, plus one second per 64 KiB), an idle authenticated
client (--timeout, Redis's `timeout`, default 0: never). Every close is
event 1013 with PEER and REASON, at most 10 a second; backup sessions are
not subject to them.

Waits are bounded polls. Where a test must show that something is *not*
closed, it waits for a witness connection that the same sweep closes, so
that the period in question has certainly passed.
"""
import os
import select
import socket
import ssl
import subprocess
import time

import pytest
import redis

import server_util as su
from server_util import SLOW, Resp, RespError, encode
from test_server_auth import make_cert

PASSWORD = "correct horse"


@pytest.fixture
def mk(cofferd_bin):
    yield from su.factory(cofferd_bin)


@pytest.fixture
def pwfile(tmp_path):
    p = tmp_path / "password"
    p.write_text(PASSWORD + "\n")
    return str(p)


def timeout_events(coffer_bin, s, reason=None):
    evs = su.events(coffer_bin, s.data, 1013)
    return [e for e in evs if reason is None or e.get("fields", {}).get("REASON") == reason]


def wait_timeout_event(coffer_bin, s, reason, peer, seconds=10):
    def find():
        for e in timeout_events(coffer_bin, s, reason):
            if e["fields"].get("PEER") == peer:
                return e
        return None
    return su.wait_for(find, seconds, "event 1013 REASON=%s PEER=%s" % (reason, peer))


def read_until_closed(sock, seconds=10):
    """Everything the server sends until it closes; None if it did not
    close within SECONDS (times SLOW)."""
    end = su.deadline(seconds)
    data = b""
    while time.monotonic() < end:
        r, _, _ = select.select([sock], [], [], max(0.0, end - time.monotonic()))
        if not r:
            break
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return data
        if not chunk:
            return data
        data += chunk
    return None


def info_field(addr, section, key):
    c = Resp(addr)
    try:
        text = c.cmd("INFO", section)
    finally:
        c.close()
    for line in text.decode().split("\r\n"):
        if line.startswith(key + ":"):
            return line.split(":", 1)[1]
    raise AssertionError("INFO %s has no %s:\n%s" % (section, key, text))


def authed(addr):
    c = Resp(addr)
    assert c.cmd("AUTH", PASSWORD) == "OK"
    return c


def peer_of(sock):
    host, port = sock.getsockname()[:2]
    return "%s:%d" % (host, port)


# ------------------------------------------------------------- handshake


def test_silent_tcp_client_is_closed_at_the_handshake_deadline(mk, pwfile, coffer_bin):
    s = mk(args=["--password-file", pwfile, "--handshake-timeout", "1"], listen=["127.0.0.1:0"])
    addr = s.tcp[0]
    good = authed(addr)  # first: its deadline passes before the silent one's
    silent = socket.create_connection(addr, timeout=10)
    t0 = time.monotonic()
    data = read_until_closed(silent)
    took = time.monotonic() - t0
    assert data is not None, "a client that sent nothing was not closed"
    assert took >= 0.9, "closed after %.2f s, before the 1 s deadline" % took
    assert data.startswith(b"-ERR no AUTH within 1 s") and b"(COFFER_E_TIMEOUT)" in data, data
    ev = wait_timeout_event(coffer_bin, s, "auth", peer_of(silent))
    assert "did not authenticate" in ev["message"], ev
    silent.close()
    # The client that authenticated in time was not cut by that sweep.
    assert good.cmd("PING") == "PONG"
    assert int(info_field(s.sock, "stats", "timedout_connections")) == 1


def test_tls_client_without_client_hello_is_closed(mk, tmp_path, coffer_bin):
    crt, key = make_cert(str(tmp_path))
    s = mk(args=["--tls-cert", crt, "--tls-key", key, "--handshake-timeout", "1"], listen=["127.0.0.1:0"])
    host, port = s.tcp[0]
    r = redis.Redis(host=host, port=port, ssl=True, ssl_ca_certs=crt, socket_timeout=30 * SLOW)
    assert r.set("tls", "ok") is True  # handshake done: no deadline any more
    half = []
    for n in (0, 40):  # nothing; part of a ClientHello
        c = socket.create_connection((host, port), timeout=10)
        if n:
            c.sendall((b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64))[:n])
        half.append((c, time.monotonic()))
    for c, t0 in half:
        data = read_until_closed(c)
        took = time.monotonic() - t0
        assert data == b"", "half-open TLS connection: %r" % data  # nothing can be said to it
        assert took >= 0.9, took
        ev = wait_timeout_event(coffer_bin, s, "handshake", peer_of(c))
        assert "did not complete the TLS handshake within 1 s" in ev["message"], ev
        c.close()
    assert r.get("tls") == b"ok"
    # After the TLS handshake, AUTH is not needed without a password: a TLS
    # client that stays silent after its handshake is not cut.
    ctx = ssl.create_default_context(cafile=crt)
    quiet = ctx.wrap_socket(socket.create_connection((host, port), timeout=10), server_hostname="localhost")
    witness = socket.create_connection((host, port), timeout=10)
    assert read_until_closed(witness) == b""
    witness.close()
    quiet.sendall(encode("PING"))
    assert quiet.recv(100) == b"+PONG\r\n"
    quiet.close()


def trickle(c, cmd):
    """Send CMD a byte every 0.1 s until the server answers or closes; it
    must stop the trickle before the end. Returns the seconds it took."""
    t0 = time.monotonic()
    sent = 0
    for b in cmd:
        r, _, _ = select.select([c], [], [], 0.1)
        if r:
            break
        try:
            c.send(bytes([b]))
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += 1
    took = time.monotonic() - t0
    assert sent < len(cmd), "the whole trickled command went through (%.1f s)" % took
    return took


def test_slowloris_before_auth_is_closed_at_the_handshake_deadline(mk, pwfile, coffer_bin):
    s = mk(args=["--password-file", pwfile, "--handshake-timeout", "1"], listen=["127.0.0.1:0"])
    c = socket.create_connection(s.tcp[0], timeout=10)
    cmd = encode("AUTH", PASSWORD + " " * 30)  # 64 bytes: 6.4 s at 10 bytes a second
    took = trickle(c, cmd)
    got = read_until_closed(c)
    assert got is not None and got.startswith(b"-ERR no AUTH within 1 s") and b"COFFER_E_TIMEOUT" in got, got
    assert 0.9 <= took < 5, took
    wait_timeout_event(coffer_bin, s, "auth", peer_of(c))
    c.close()


# --------------------------------------------------------------- request


def test_slowloris_after_auth_is_closed_at_the_request_deadline(mk, coffer_bin):
    s = mk(args=["--request-timeout", "1"])
    r = s.redis()
    # A large value sent steadily (64 KiB every 0.25 s: 1.5 s for 384 KiB)
    # takes longer than the deadline and goes through: each 64 KiB received
    # earns a second.
    big = Resp(s.sock)
    value = b"v" * (384 << 10)
    payload = encode("SET", "big", value)
    t0 = time.monotonic()
    for i in range(0, len(payload), 64 << 10):
        big.send(payload[i:i + (64 << 10)])
        time.sleep(0.25)
    assert time.monotonic() - t0 > 1.2
    assert big.reply() == "OK"
    assert r.strlen("big") == len(value)
    # A trickle is cut: 70 bytes at 10 a second would take 7 s.
    c = socket.socket(socket.AF_UNIX)
    c.settimeout(10)
    c.connect(s.sock)
    cmd = encode("SET", "slow", "x" * 40)
    took = trickle(c, cmd)
    got = read_until_closed(c)
    assert got is not None, "not closed"
    assert got.startswith(b"-ERR the command was not received completely within 1 s"), got
    assert b"(COFFER_E_TIMEOUT)" in got, got
    assert 0.9 <= took < 5, took
    ev = wait_timeout_event(coffer_bin, s, "request", "uid %d" % os.getuid())
    assert "did not finish sending a command within 1 s" in ev["message"], ev
    c.close()
    assert r.exists("slow") == 0
    assert big.cmd("PING") == "PONG"  # active connections are not touched


# ------------------------------------------------------------------ idle


def test_idle_authenticated_client_is_closed_by_timeout(mk, pwfile, coffer_bin):
    s = mk(args=["--timeout", "1", "--password-file", pwfile], listen=["127.0.0.1:0"])
    assert Resp(s.sock).cmd("CONFIG", "GET", "timeout") == [b"timeout", b"1"]
    idle = authed(s.tcp[0])
    busy = Resp(s.sock)
    t0 = time.monotonic()
    # One client keeps talking (every 0.3 s); the other says nothing.
    closed = None
    for _ in range(int(10 * SLOW / 0.3)):
        assert busy.cmd("PING") == "PONG"
        r, _, _ = select.select([idle.s], [], [], 0.3)
        if r:
            closed = idle.s.recv(100)
            break
    took = time.monotonic() - t0
    assert closed == b"", "idle client: %r" % closed  # closed quietly, as Redis does
    assert took >= 0.9, took
    wait_timeout_event(coffer_bin, s, "idle", peer_of(idle.s))
    assert busy.cmd("PING") == "PONG"
    idle.close()


def test_idle_client_is_kept_when_timeout_is_0(mk, pwfile, coffer_bin):
    s = mk(args=["--password-file", pwfile, "--handshake-timeout", "1", "--request-timeout", "1"],
           listen=["127.0.0.1:0"])
    c = Resp(s.sock)
    assert c.cmd("CONFIG", "GET", "*timeout") == [b"handshake-timeout", b"1", b"request-timeout", b"1",
                                                  b"timeout", b"0"]
    c.close()
    idle = authed(s.tcp[0])
    unix_idle = Resp(s.sock)
    assert unix_idle.cmd("PING") == "PONG"
    # The witness connects after both went idle and is closed at its
    # handshake deadline: by then they were idle longer than every deadline
    # the server has.
    witness = socket.create_connection(s.tcp[0], timeout=10)
    assert read_until_closed(witness) is not None
    witness.close()
    assert idle.cmd("PING") == "PONG"
    assert unix_idle.cmd("PING") == "PONG"
    assert [e["fields"]["REASON"] for e in timeout_events(coffer_bin, s)] == ["auth"]


# ---------------------------------------------------------------- backup


def test_backup_in_progress_survives_the_idle_timeout(mk, coffer_bin, tmp_path):
    s = mk(args=["--timeout", "1"])
    r = s.redis()
    for i in range(16):
        r.set("k%02d" % i, os.urandom(1 << 20))  # 16 MiB that do not compress
    r.connection_pool.disconnect()  # it would idle past --timeout too: only the witness may
    # A full backup to a pipe nobody reads yet: the client stops writing,
    # the server stops sending, the session sits idle.
    p = subprocess.Popen([coffer_bin, "--server", "unix:" + s.sock, "backup", "-o", "-", "--quiet"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        su.wait_for(lambda: info_field(s.sock, "clients", "backup_sessions") == "1", 30,
                    "the backup session")
        witness = Resp(s.sock)
        assert witness.cmd("PING") == "PONG"
        assert witness.closed(), "the idle witness was not closed"  # idle > --timeout has passed
        assert p.poll() is None
        assert info_field(s.sock, "clients", "backup_sessions") == "1"
        out, err = p.communicate(timeout=120 * SLOW)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    assert len(out) > 16 << 20
    path = tmp_path / "idle.cbk"
    path.write_bytes(out)
    v = subprocess.run([coffer_bin, "verify", str(path)], capture_output=True, text=True, timeout=120 * SLOW)
    assert v.returncode == 0, v.stderr
    assert [e["fields"]["REASON"] for e in timeout_events(coffer_bin, s)] == ["idle"], timeout_events(coffer_bin, s)


def test_backup_waiting_for_its_client_survives_the_idle_timeout_and_a_vanished_client_is_found(
        mk, coffer_bin, tmp_path):
    s = mk(args=["--timeout", "1"])
    s.redis().set("k", "v")
    c = Resp(s.sock)
    c.send(encode("COFFER.BACKUP", "1", "full"))
    assert c.reply() == "COFFER-BACKUP 1"
    hdr = c.s.recv(24, socket.MSG_WAITALL)
    assert hdr[:4] == b"CBK1", hdr
    # The server now waits for us. A witness idles past --timeout ...
    witness = Resp(s.sock)
    assert witness.cmd("PING") == "PONG"
    assert witness.closed()
    # ... and the backup is still running: a second one is refused.
    p = subprocess.run([coffer_bin, "--server", "unix:" + s.sock, "backup", "-o", str(tmp_path / "x.cbk")],
                       capture_output=True, text=True, timeout=60 * SLOW)
    assert p.returncode == 150 and "(COFFER_E_BACKUP_IN_PROGRESS)" in p.stderr, p.stderr
    # The client vanishes: the server finds out, aborts, and the next backup works.
    c.close()
    su.wait_for(lambda: su.events(coffer_bin, s.data, 1203), 30, "event 1203")
    su.wait_for(lambda: info_field(s.sock, "clients", "backup_sessions") == "0", 30, "the session's end")
    p = subprocess.run([coffer_bin, "--server", "unix:" + s.sock, "backup", "-o", str(tmp_path / "y.cbk")],
                       capture_output=True, text=True, timeout=60 * SLOW)
    assert p.returncode == 0, p.stderr


# ------------------------------------------------- flood, slots, config


def test_many_timeouts_at_once_are_rate_limited_events(mk, pwfile, coffer_bin):
    s = mk(args=["--password-file", pwfile, "--handshake-timeout", "1"], listen=["127.0.0.1:0"])
    flood = [socket.create_connection(s.tcp[0], timeout=10) for _ in range(30)]
    for c in flood:
        assert read_until_closed(c) is not None
        c.close()
    # One more, in a later second: its event says how many were left out.
    last = socket.create_connection(s.tcp[0], timeout=10)
    assert read_until_closed(last) is not None
    ev = wait_timeout_event(coffer_bin, s, "auth", peer_of(last))
    last.close()
    assert "similar events were not logged" in ev["message"], ev
    logged = timeout_events(coffer_bin, s)
    assert 1 < len(logged) < 31, len(logged)
    assert int(info_field(s.sock, "stats", "timedout_connections")) == 31


def test_half_open_connections_hold_max_clients_slots_only_until_the_deadline(mk, pwfile):
    s = mk(args=["--password-file", pwfile, "--handshake-timeout", "1", "--max-clients", "3"],
           listen=["127.0.0.1:0"])
    addr = s.tcp[0]
    half = [socket.create_connection(addr, timeout=10) for _ in range(3)]
    extra = Resp(addr)
    e = extra.reply()
    assert isinstance(e, RespError) and "max number of clients reached (3)" in e and "COFFER_E_LIMIT" in e, e
    assert extra.closed()
    extra.close()
    for c in half:
        assert read_until_closed(c) is not None
        c.close()

    def slot():
        try:
            c = Resp(addr)
            ok = c.cmd("AUTH", PASSWORD) == "OK"
            c.close()
            return ok
        except (EOFError, OSError):
            return False
    su.wait_for(slot, 10, "a free connection slot")


def test_deadline_options_in_the_config_file_and_flags(mk, tmp_path):
    conf = tmp_path / "cofferd.ini"
    conf.write_text("[cofferd]\nhandshake-timeout = 3\nrequest-timeout = 0\ntimeout = 300\n")
    s = mk(args=["--config", str(conf), "--timeout", "7"])
    c = Resp(s.sock)
    got = c.cmd("CONFIG", "GET", "*timeout")
    assert got == [b"handshake-timeout", b"3", b"request-timeout", b"0", b"timeout", b"7"], got
    for bad in ("timeout = -1", "handshake-timeout = soon", "request-timeout = 99999999999"):
        conf.write_text("[cofferd]\n%s\n" % bad)
        b = mk(args=["--config", str(conf)], start=False)
        p = subprocess.run(b.command(), capture_output=True, text=True, timeout=60 * SLOW)
        assert p.returncode == 221, p.stderr  # COFFER_E_CONFIG
        assert "number of seconds" in p.stderr and "(COFFER_E_CONFIG)" in p.stderr, p.stderr
