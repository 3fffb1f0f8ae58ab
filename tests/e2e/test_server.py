"""cofferd speaks Redis: every command through redis-cli and python3-redis,
pipelining, MULTI/EXEC, SCAN, RESP3, and the introspection commands that
clients send (INFO, CONFIG GET, COMMAND, CLIENT)."""
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


def test_redis_cli_commands(srv):
    c = srv.cli
    assert c("PING") == "PONG"
    assert c("ECHO", "hi there") == "hi there"
    assert c("SET", "k1", "v1") == "OK"
    assert c("GET", "k1") == "v1"
    assert c("GET", "missing") == ""
    assert c("MSET", "a", "1", "b", "2") == "OK"
    assert c("MGET", "nope", "a", "b").split("\n") == ["", "1", "2"]
    assert c("INCR", "a") == "2"
    assert c("INCRBY", "a", "40") == "42"
    assert c("DECR", "a") == "41"
    assert c("DECRBY", "a", "41") == "0"
    assert c("APPEND", "k1", "xyz") == "5"
    assert c("STRLEN", "k1") == "5"
    assert c("GETRANGE", "k1", "1", "-2") == "1xy"
    assert c("TYPE", "k1") == "string"
    assert c("EXISTS", "k1", "a", "zz", "k1") == "3"
    assert c("HSET", "h", "f1", "v1", "f2", "v2") == "2"
    assert c("HGET", "h", "f2") == "v2"
    assert c("HLEN", "h") == "2"
    assert c("TYPE", "h") == "hash"
    assert sorted(c("KEYS", "*").split("\n")) == ["a", "b", "h", "k1"]
    assert c("DBSIZE") == "4"
    assert c("DEL", "a", "b", "zz") == "2"
    assert c("SELECT", "0") == "OK"
    err = c("INCR", "k1")
    assert "value is not an integer or out of range (COFFER_E_NOT_INTEGER)" in err
    assert "WRONGTYPE" in c("GET", "h") and "(COFFER_E_WRONG_TYPE)" in c("GET", "h")
    assert "(COFFER_E_UNKNOWN_COMMAND)" in c("NOSUCHCMD", "x")
    assert "(COFFER_E_INVALID_ARGUMENT)" in c("SELECT", "1")
    assert sorted(c("--scan").split("\n")) == ["h", "k1"]
    assert c("FLUSHDB") == "OK"
    assert c("DBSIZE") == "0"
    # Quoting and binary data through the CLI.
    assert c("SET", "sp ace", "a\nb") == "OK"
    assert c("--no-raw", "GET", "sp ace") == '"a\\nb"'


def test_strings_python(srv):
    r = srv.redis()
    assert r.ping()
    assert r.set("k", b"\x00\xffbin") is True
    assert r.get("k") == b"\x00\xffbin"
    assert r.set("k", "new", nx=True) is None
    assert r.set("k2", "v2", xx=True) is None
    assert r.set("k2", "v2", nx=True) is True
    assert r.set("k2", "v3", xx=True) is True
    assert r.set("k2", "v4", get=True) == b"v3"
    assert r.set("nokey", "x", get=True) is None
    assert r.get("k2") == b"v4"
    assert r.mset({"m1": "1", "m2": "2"}) is True
    assert r.mget("m1", "m2", "m3") == [b"1", b"2", None]
    assert r.incr("cnt") == 1
    assert r.incrby("cnt", 9) == 10
    assert r.decr("cnt") == 9
    assert r.decrby("cnt", 10) == -1
    r.set("big", str(2**63 - 1))
    with pytest.raises(redis.ResponseError, match="overflow.*COFFER_E_NOT_INTEGER"):
        r.incr("big")
    with pytest.raises(redis.ResponseError, match=r"not an integer.*\(COFFER_E_NOT_INTEGER\)"):
        r.incrby("cnt", "1.5")
    r.set("n", " 1")
    with pytest.raises(redis.ResponseError, match="COFFER_E_NOT_INTEGER"):
        r.incr("n")
    assert r.append("ap", "ab") == 2
    assert r.append("ap", "cd") == 4
    assert r.get("ap") == b"abcd"
    assert r.strlen("ap") == 4 and r.strlen("none") == 0
    assert r.getrange("ap", 0, -1) == b"abcd"
    assert r.getrange("ap", -3, -2) == b"bc"
    assert r.getrange("ap", 5, 10) == b""
    assert r.getrange("none", 0, 1) == b""
    assert r.type("ap") == b"string" and r.type("none") == b"none"
    assert r.exists("ap", "ap", "none") == 2
    assert r.delete("ap", "none") == 1
    assert r.get("ap") is None
    assert r.unlink("m1") == 1
    with pytest.raises(redis.ResponseError, match="COFFER_E_NOT_SUPPORTED"):
        r.set("e", "1", ex=10)
    with pytest.raises(redis.ResponseError, match="empty keys"):
        r.set("", "x")
    with pytest.raises(redis.ResponseError, match="COFFER_E_KEY_TOO_LARGE"):
        r.set("x" * 1025, "v")
    assert r.set("y" * 1024, "v") is True
    assert r.get("y" * 1024) == b"v"


def test_hashes_python(srv):
    r = srv.redis()
    assert r.hset("h", mapping={"a": "1", "b": "2"}) == 2
    assert r.hset("h", "a", "10") == 0
    assert r.hset("h", "", "empty field") == 1
    assert r.hget("h", "a") == b"10"
    assert r.hget("h", "zz") is None and r.hget("nohash", "a") is None
    assert r.hmget("h", "a", "zz", "b") == [b"10", None, b"2"]
    assert r.hlen("h") == 3 and r.hlen("nohash") == 0
    assert r.hexists("h", "b") and not r.hexists("h", "q")
    assert r.hgetall("h") == {b"": b"empty field", b"a": b"10", b"b": b"2"}
    assert r.hkeys("h") == [b"", b"a", b"b"]
    assert r.hvals("h") == [b"empty field", b"10", b"2"]
    assert r.execute_command("HMSET", "h2", "x", "1", "y", "2") in (True, b"OK", "OK")
    # Keys that are prefixes of each other keep their fields apart.
    r.hset("hh", "a", "other")
    assert r.hgetall("h") == {b"": b"empty field", b"a": b"10", b"b": b"2"}
    assert r.hdel("h", "a", "zz") == 1
    assert r.hdel("h", "b", "") == 2
    assert r.exists("h") == 0 and r.type("h") == b"none"
    r.set("s", "string")
    for call in (lambda: r.hget("s", "a"), lambda: r.hset("s", "a", "b"), lambda: r.hgetall("s"),
                 lambda: r.hlen("s"), lambda: r.hdel("s", "a")):
        with pytest.raises(redis.ResponseError, match="WRONGTYPE.*COFFER_E_WRONG_TYPE"):
            call()
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        r.get("hh")
    # SET over a hash replaces it entirely; DEL removes every field.
    r.hset("h3", mapping={"f": "1", "g": "2"})
    r.set("h3", "now a string")
    assert r.get("h3") == b"now a string"
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        r.hgetall("h3")
    r.hset("h4", mapping={"f": "1", "g": "2"})
    assert r.delete("h4") == 1
    assert r.hgetall("h4") == {} and r.hlen("h4") == 0
    r.hset("h4", "z", "1")
    assert r.hgetall("h4") == {b"z": b"1"}
    # HSCAN
    r.hset("big", mapping={"f%03d" % i: str(i) for i in range(250)})
    got = dict(r.hscan_iter("big", count=17))
    assert len(got) == 250 and got[b"f007"] == b"7"
    got = dict(r.hscan_iter("big", match="f1*", count=5))
    assert set(got) == {("f1%02d" % i).encode() for i in range(100)}


def test_keys_and_scan(srv):
    r = srv.redis()
    p = r.pipeline(transaction=False)
    for i in range(500):
        p.set("user:%04d" % i, i)
    for i in range(50):
        p.hset("hash:%02d" % i, "f", i)
    p.execute()
    assert len(r.keys("*")) == 550
    assert len(r.keys("user:00*")) == 100
    assert r.keys("user:0001") == [b"user:0001"]
    assert sorted(r.keys("hash:[0-1]?")) == [("hash:%02d" % i).encode() for i in range(20)]
    assert r.keys("hash:\\*") == []
    assert r.dbsize() == 550
    assert len(list(r.scan_iter(count=7))) == 550
    assert len(set(r.scan_iter(match="user:04*", count=50))) == 100
    assert set(r.scan_iter(_type="hash", count=100)) == {("hash:%02d" % i).encode() for i in range(50)}
    cur, keys = r.scan(0, count=10)
    assert cur != 0 and len(keys) == 10
    with pytest.raises(redis.ResponseError, match="invalid cursor"):
        r.scan(123456789)
    # redis-cli --scan --pattern
    out = srv.cli("--scan", "--pattern", "user:000*").split("\n")
    assert sorted(out) == ["user:%04d" % i for i in range(10)]


def test_scan_with_concurrent_writes(srv):
    """Keys present for the whole scan come back exactly once, however the
    tree changes meanwhile."""
    r = srv.redis()
    stable = {("s:%05d" % i).encode() for i in range(0, 3000, 3)}
    p = r.pipeline(transaction=False)
    for k in stable:
        p.set(k, "1")
    p.execute()
    stop = threading.Event()

    def churn():
        w = srv.redis()
        i = 0
        while not stop.is_set() and i < 20000:
            k = "s:%05d" % (3 * (i % 1000) + 1 + i % 2)
            if i % 3 == 0:
                w.delete(k)
            else:
                w.set(k, "x" * (i % 200))
            i += 1

    t = threading.Thread(target=churn)
    t.start()
    seen = []
    try:
        cursor = 0
        for _ in range(100000):
            cursor, keys = r.scan(cursor, count=25)
            seen += keys
            if cursor == 0:
                break
    finally:
        stop.set()
        t.join(60)
    got = [k for k in seen if k in stable]
    assert len(got) == len(stable) and set(got) == stable
    assert len(seen) == len(set(seen)), "a key came back twice"


def test_pipelining_raw(srv):
    """10,000 commands in one write; replies in order."""
    c = Resp(srv.sock)
    n = 10000
    data = b"".join(encode("SET", "p%d" % i, "v%d" % i) for i in range(n))
    data += b"".join(encode("GET", "p%d" % i) for i in range(n))
    data += b"PING\r\n"
    t = threading.Thread(target=c.send, args=(data,))
    t.start()
    for i in range(n):
        assert c.reply() == "OK"
    for i in range(n):
        assert c.reply() == b"v%d" % i
    assert c.reply() == "PONG"
    t.join(30)
    r = srv.redis()
    p = r.pipeline(transaction=False)
    for i in range(3000):
        p.incr("ctr")
    assert p.execute()[-1] == 3000


def test_inline_commands(srv):
    c = Resp(srv.sock)
    c.send(b"PING\r\nSET inl \"a b\\x41\"\r\nGET inl\nECHO 'it''s'\r\n\r\n  \r\nEXISTS inl\r\n")
    assert c.reply() == "PONG"
    assert c.reply() == "OK"
    assert c.reply() == b"a bA"
    assert isinstance(c.reply(), RespError)  # 'it''s': quotes not closed properly
    # The connection is closed after a protocol error.


def test_multi_exec(srv):
    r = srv.redis()
    p = r.pipeline(transaction=True)
    p.set("t1", "a").incr("t2").hset("th", "f", "v").get("t1")
    assert p.execute() == [True, 1, 1, b"a"]
    # A runtime error inside EXEC does not stop the others (as in Redis).
    p = r.pipeline(transaction=True)
    p.set("t3", "x").incr("t3").set("t4", "y")
    res = p.execute(raise_on_error=False)
    assert res[0] is True and isinstance(res[1], redis.ResponseError) and res[2] is True
    # Unknown command while queueing: EXECABORT, nothing applied.
    c = Resp(srv.sock)
    assert c.cmd("MULTI") == "OK"
    assert c.cmd("SET", "t5", "1") == "QUEUED"
    e = c.cmd("NOSUCH")
    assert isinstance(e, RespError) and "COFFER_E_UNKNOWN_COMMAND" in e
    e = c.cmd("EXEC")
    assert isinstance(e, RespError) and e.startswith("EXECABORT")
    assert c.cmd("GET", "t5") is None
    assert c.cmd("MULTI") == "OK"
    assert isinstance(c.cmd("MULTI"), RespError)
    assert c.cmd("DISCARD") == "OK"
    assert isinstance(c.cmd("EXEC"), RespError)
    assert isinstance(c.cmd("DISCARD"), RespError)
    # MULTI over several network writes, with reads: one snapshot.
    assert c.cmd("MULTI") == "OK"
    assert c.cmd("SET", "t6", "1") == "QUEUED"
    assert c.cmd("GET", "t6") == "QUEUED"
    assert c.cmd("EXEC") == ["OK", b"1"]
    # Read-only transaction.
    assert c.cmd("MULTI") == "OK"
    assert c.cmd("GET", "t6") == "QUEUED"
    assert c.cmd("EXISTS", "t6", "t1") == "QUEUED"
    assert c.cmd("EXEC") == [b"1", 2]


def test_multi_exec_is_atomic_for_readers(srv):
    """Readers never see half of a MULTI/EXEC."""
    r = srv.redis()
    r.mset({"x": 0, "y": 0})
    stop = threading.Event()
    bad = []

    def reader():
        rr = srv.redis()
        while not stop.is_set():
            x, y = rr.mget("x", "y")
            if x != y:
                bad.append((x, y))

    ts = [threading.Thread(target=reader) for _ in range(3)]
    for t in ts:
        t.start()
    try:
        for i in range(1, 300):
            p = r.pipeline(transaction=True)
            p.set("x", i).set("y", i)
            p.execute()
    finally:
        stop.set()
        for t in ts:
            t.join(30)
    assert not bad


def test_resp3_hello(srv):
    c = Resp(srv.sock)
    h = c.cmd("HELLO", "3", "SETNAME", "r3client")
    assert h[b"proto"] == 3 and h[b"server"] == b"redis" and b"version" in h
    assert c.cmd("GET", "nothing") is None
    c.cmd("HSET", "h", "a", "1", "b", "2")
    assert c.cmd("HGETALL", "h") == {b"a": b"1", b"b": b"2"}
    assert c.cmd("CLIENT", "GETNAME") == b"r3client"
    conf = c.cmd("CONFIG", "GET", "appendfsync")
    assert conf == {b"appendfsync": b"always"}
    info = c.cmd("INFO", "server")
    assert info.startswith(b"txt:") and b"redis_version" in info
    h2 = c.cmd("HELLO", "2")
    assert isinstance(h2, list) and h2[h2.index(b"proto") + 1] == 2
    assert isinstance(c.cmd("HELLO", "4"), RespError)
    # redis-cli -3
    assert srv.cli("-3", "HGETALL", "h").split("\n") == ["a 1", "b 2"]


def test_introspection(srv):
    r = srv.redis()
    r.set("k", "v")
    info = r.info()
    assert info["redis_version"].startswith("7.")
    assert info["connected_clients"] >= 1
    assert info["db0"]["keys"] == 1
    pers = r.info("persistence")
    for k in ("log_generation_current", "checkpoint_lsn", "durable_lsn", "last_commit_lsn"):
        assert k in pers
    assert pers["last_full_backup"] == "none"
    assert "total_commands_processed" in r.info("stats")
    assert r.config_get("appendonly") == {"appendonly": "yes"}
    assert r.config_get("save") == {"save": ""}
    assert "maxclients" in r.config_get("max*")
    with pytest.raises(redis.ResponseError, match="COFFER_E_NOT_SUPPORTED"):
        r.config_set("save", "")
    assert r.command_count() >= 40
    cmds = r.command()
    assert cmds["get"]["arity"] == 2 and "readonly" in cmds["get"]["flags"]
    raw = Resp(srv.sock)
    docs = raw.cmd("COMMAND", "DOCS", "get")
    assert docs[0] == b"get" and b"summary" in docs[1]
    assert raw.cmd("COMMAND", "INFO", "set", "nosuch")[1] is None
    assert r.client_id() > 0
    assert r.client_setname("tester") is True
    assert r.client_getname() == "tester" or r.client_getname() == b"tester"
    ci = r.client_info()
    assert ci["name"] == "tester" and ci["db"] == 0
    with pytest.raises(redis.ResponseError):
        r.client_setname("has space")
    # redis-benchmark asks for these at start.
    assert srv.cli("CONFIG", "GET", "appendonly") == "appendonly\nyes"
    es = r.info("errorstats")
    assert isinstance(es, dict)


def test_redis_benchmark_smoke(srv):
    p = __import__("subprocess").run(
        ["redis-benchmark", "-s", srv.sock, "-t", "set,get,incr,mset", "-n", "2000", "-c", "10", "-q"],
        capture_output=True, text=True, timeout=120 * su.SLOW)
    assert p.returncode == 0, p.stderr
    out = p.stdout.replace("\r", "\n")
    for t in ("SET: ", "GET: ", "INCR: ", "MSET (10 keys): "):
        assert any(line.startswith(t) and "requests per second" in line for line in out.split("\n")), out
    assert srv.redis().ping()
