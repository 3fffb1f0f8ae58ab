"""cofferd under pressure: malformed and oversized input, 1,000 connections,
a client that never reads, 64 MiB values, the output buffer limit."""
import hashlib
import os
import resource
import socket
import threading
import time

import pytest
import redis

import server_util as su
from server_util import Resp, RespError, encode


@pytest.fixture
def mk(cofferd_bin):
    yield from su.factory(cofferd_bin)


@pytest.fixture
def srv(mk):
    return mk()


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def expect_error_and_close(srv, payload, code, text=None):
    c = Resp(srv.sock)
    c.send(payload)
    e = c.reply()
    assert isinstance(e, RespError), e
    assert e.endswith("(%s)" % code), e
    if text:
        assert text in e, e
    assert c.closed(), "the connection stayed open after %r" % e
    c.close()


@pytest.mark.parametrize("payload,code,text", [
    (b"*2\r\n$3\r\nGET\r\n:12\r\n", "COFFER_E_PROTOCOL", "expected '$'"),
    (b"*1\r\n$-5\r\n", "COFFER_E_PROTOCOL", "invalid bulk length"),
    (b"*x\r\n", "COFFER_E_PROTOCOL", "invalid multibulk length"),
    (b"*1\r\n$3\r\nGETxx\r\n", "COFFER_E_PROTOCOL", "CRLF"),
    (b"*2\r\n$3\r\nGET\r\n$536870913\r\n", "COFFER_E_LIMIT", "bulk length"),
    (b"*1048577\r\n", "COFFER_E_LIMIT", "arguments"),
    (b"SET a \"unterminated\r\n", "COFFER_E_PROTOCOL", "unbalanced quotes"),
    (b"x" * (70 * 1024), "COFFER_E_LIMIT", "inline"),
    (b"*1\r\n$" + b"9" * 70000, "COFFER_E_LIMIT", "count string"),
], ids=["not-dollar", "negative-bulk", "bad-count", "no-crlf", "bulk-too-long", "too-many-args",
        "unbalanced-quotes", "inline-too-long", "count-too-long"])
def test_bad_input(srv, payload, code, text):
    expect_error_and_close(srv, payload, code, text)
    assert srv.redis().ping()


def test_commands_before_bad_input_get_their_replies(srv):
    c = Resp(srv.sock)
    c.send(encode("SET", "k", "v") + encode("GET", "k") + b"*1\r\n$x\r\n")
    assert c.reply() == "OK"
    assert c.reply() == b"v"
    e = c.reply()
    assert isinstance(e, RespError) and "COFFER_E_PROTOCOL" in e
    assert c.closed()


def test_fuzzed_garbage_never_crashes(srv):
    import random
    rnd = random.Random(1234)
    pieces = [b"*", b"$", b"\r\n", b"-1", b"3", b"0", b"99999999999999999999", b"GET", b"SET",
              b"\"", b"'", b"\\x4", b" ", b"\n", b"*2", b"$5", b"\x00", b"%", b"HELLO", b"3"]
    for i in range(150):
        data = b"".join(rnd.choice(pieces) for _ in range(rnd.randint(1, 40)))
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5 * su.SLOW)
        s.connect(srv.sock)
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):
                pass
        except (ConnectionResetError, BrokenPipeError, socket.timeout):
            pass
        s.close()
    assert srv.alive()
    assert srv.redis().ping()


def test_unauthenticated_limits(mk, tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("sekret\n")
    s = mk(args=["--password-file", str(pw)], listen=["127.0.0.1:0"])
    host, port = s.tcp[0]
    c = Resp((host, port))
    c.send(b"*2\r\n$3\r\nGET\r\n$100000\r\n")
    e = c.reply()
    assert isinstance(e, RespError) and "COFFER_E_LIMIT" in e
    assert c.closed()


def test_thousand_connections(srv):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    n = 1000
    conns = []
    try:
        for i in range(n):
            s = socket.socket(socket.AF_UNIX)
            s.connect(srv.sock)  # blocking: waits for room in the backlog
            s.settimeout(30 * su.SLOW)
            conns.append(s)
        for i, s in enumerate(conns):
            s.sendall(encode("SET", "c%d" % i, str(i)) + encode("GET", "c%d" % i))
        for i, s in enumerate(conns):
            want = b"+OK\r\n$%d\r\n%d\r\n" % (len(str(i)), i)
            got = b""
            while len(got) < len(want):
                chunk = s.recv(4096)
                assert chunk, "connection %d closed" % i
                got += chunk
            assert got == want
        info = srv.redis().info("clients")
        assert info["connected_clients"] >= n
    finally:
        for s in conns:
            s.close()
    assert srv.redis().dbsize() == n


def test_stalled_reader_does_not_block_others(srv):
    """A client sends GETs of a 4 MiB value and never reads: the others go
    on, and the server does not buffer all those replies."""
    r = srv.redis()
    big = os.urandom(4 << 20)
    r.set("big", big)
    base = rss_kib(srv.pid)
    stalled = socket.socket(socket.AF_UNIX)
    stalled.setblocking(False)
    stalled.connect(srv.sock)
    req = encode("GET", "big") * 5000  # 20 GB of replies
    sent = 0
    end = su.deadline(5)
    # Push them all, or as many as the server takes before it stops reading.
    while sent < len(req) and time.monotonic() < end:
        try:
            sent += stalled.send(req[sent:])
        except BlockingIOError:
            time.sleep(0.01)
    # Others are served promptly meanwhile.
    other = srv.redis(socket_timeout=10 * su.SLOW)
    t0 = time.monotonic()
    for i in range(200):
        other.set("o%d" % i, i)
        assert other.get("o%d" % i) == str(i).encode()
    assert time.monotonic() - t0 < 10 * su.SLOW
    grown = rss_kib(srv.pid) - base
    assert grown < 200 * 1024, "server grew by %d KiB for a stalled client" % grown
    stalled.close()
    assert srv.redis().ping()


def test_64mib_value(srv):
    r = srv.redis(socket_timeout=120 * su.SLOW)
    v = os.urandom(64 << 20)
    assert r.set("huge", v) is True
    got = r.get("huge")
    assert len(got) == len(v) and hashlib.sha256(got).digest() == hashlib.sha256(v).digest()
    assert r.strlen("huge") == 64 << 20
    assert r.getrange("huge", 1000, 1009) == v[1000:1010]
    assert r.append("huge", b"tail") == (64 << 20) + 4
    assert r.delete("huge") == 1


def test_output_buffer_limit(mk):
    s = mk(args=["--max-bulk-length", "600K", "--max-output-buffer", "1M"])
    r = s.redis()
    for k in ("a", "b", "c"):
        r.set(k, b"x" * (500 << 10))
    assert len(r.get("a")) == 500 << 10
    c = Resp(s.sock)
    e = c.cmd("MGET", "a", "b", "c")
    assert isinstance(e, RespError) and "COFFER_E_LIMIT" in e and "output buffer" in e
    assert c.closed()
    with pytest.raises(redis.ResponseError, match="COFFER_E_LIMIT"):
        r.append("a", b"y" * (200 << 10))
    # Replies built apart (HGETALL, KEYS) name the incremental command.
    r.hset("h", mapping={"f%d" % i: b"x" * (500 << 10) for i in range(3)})
    c = Resp(s.sock)
    e = c.cmd("HGETALL", "h")
    assert isinstance(e, RespError) and "COFFER_E_LIMIT" in e and "use HSCAN" in e, e
    assert c.closed()
    r.mset({"k%05d" % i + "y" * 300: 1 for i in range(4000)})
    c = Resp(s.sock)
    e = c.cmd("KEYS", "*")
    assert isinstance(e, RespError) and "COFFER_E_LIMIT" in e and "use SCAN" in e, e
    assert c.closed()
    assert len(r.keys("k0001*")) == 10  # within the limit: answered
    # Bulk limit as configured.
    c = Resp(s.sock)
    c.send(b"*3\r\n$3\r\nSET\r\n$1\r\nq\r\n$700000\r\n")
    e = c.reply()
    assert isinstance(e, RespError) and "COFFER_E_LIMIT" in e
    assert c.closed()


def test_max_clients(mk):
    s = mk(args=["--max-clients", "5"])
    keep = [Resp(s.sock) for _ in range(5)]
    for k in keep:
        assert k.cmd("PING") == "PONG"
    extra = Resp(s.sock)
    e = extra.reply()
    assert isinstance(e, RespError) and "max number of clients" in e and "COFFER_E_LIMIT" in e
    assert extra.closed()
    extra.close()
    keep[0].close()

    def ping():
        try:
            return Resp(s.sock).cmd("PING") == "PONG"
        except (EOFError, OSError):
            return False

    su.wait_for(ping, what="a free connection slot")
