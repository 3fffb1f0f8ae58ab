"""cofferd's life cycle: clean and dirty restarts, nothing acknowledged is
lost on kill -9, MULTI/EXEC stays atomic across a crash, shutdown with
work in flight, one server per directory, configuration and listen errors."""
import os
import random
import signal
import socket
import subprocess
import threading
import time

import pytest
import redis

import server_util as su
from server_util import Resp, RespError, encode


@pytest.fixture
def mk(cofferd_bin):
    yield from su.factory(cofferd_bin)


def restart(mk, old):
    return mk(data=old.data, sock=old.sock)


def test_clean_restart(mk, coffer_bin):
    s = mk()
    r = s.redis()
    r.mset({"k%d" % i: "v%d" % i for i in range(1000)})
    r.hset("h", mapping={"a": "1", "b": "2"})
    assert s.stop() == 0
    assert not os.path.exists(s.sock)
    assert "stopped cleanly" in s.log()
    assert su.events(coffer_bin, s.data, 1001)
    s2 = restart(mk, s)
    r = s2.redis()
    assert r.dbsize() == 1001
    assert r.get("k999") == b"v999" and r.hgetall("h") == {b"a": b"1", b"b": b"2"}
    assert not su.events(coffer_bin, s.data, 1003), "recovery ran after a clean shutdown"
    started = su.events(coffer_bin, s.data, 1000)
    assert "LISTEN" in started[-1]["fields"] and s.sock in started[-1]["fields"]["LISTEN"]


def test_sigint_is_a_clean_stop(mk, coffer_bin):
    s = mk()
    s.redis().set("a", "1")
    assert s.stop(signal.SIGINT) == 0
    assert "stopped cleanly" in s.log()
    ev = su.events(coffer_bin, s.data, 1001)
    assert ev and "SIGINT" in ev[-1]["message"]
    s2 = restart(mk, s)
    assert s2.redis().get("a") == b"1"


def writer(sock, prefix, acked, stop, errors):
    try:
        r = redis.Redis(unix_socket_path=sock, socket_timeout=30)
        i = 0
        while not stop.is_set():
            k = "%s:%d" % (prefix, i)
            if r.set(k, k * 3):
                acked.append(k)
            i += 1
    except (redis.ConnectionError, redis.TimeoutError, ConnectionError, OSError):
        pass
    except Exception as e:  # pragma: no cover - reported by the test
        errors.append(e)


def multi_writer(sock, stop, acked, errors):
    """MULTI: SET a:N, SET b:N and INCR both counters; acked: the N done."""
    try:
        r = redis.Redis(unix_socket_path=sock, socket_timeout=30)
        n = 0
        while not stop.is_set():
            n += 1
            p = r.pipeline(transaction=True)
            p.set("ma", n).set("mb", n).incr("ca").incr("cb")
            p.execute()
            acked.append(n)
    except (redis.ConnectionError, redis.TimeoutError, ConnectionError, OSError):
        pass
    except Exception as e:  # pragma: no cover
        errors.append(e)


@pytest.mark.parametrize("rounds", [3])
def test_kill9_loses_nothing_acknowledged(mk, coffer_bin, rounds):
    s = mk()
    rnd = random.Random(42)
    all_acked = []
    last_multi = 0
    for rnd_i in range(rounds):
        stop = threading.Event()
        acked = [[] for _ in range(6)]
        macked = []
        errors = []
        ts = [threading.Thread(target=writer, args=(s.sock, "w%d.%d" % (rnd_i, j), acked[j], stop, errors))
              for j in range(6)]
        ts.append(threading.Thread(target=multi_writer, args=(s.sock, stop, macked, errors)))
        for t in ts:
            t.start()
        # Let them run for a random moment, then crash the server.
        su.wait_for(lambda: sum(len(a) for a in acked) > 50 and macked, seconds=30, what="some writes")
        time.sleep(rnd.uniform(0.1, 0.6))
        s.kill9()
        stop.set()
        for t in ts:
            t.join(60)
        assert not errors, errors
        s = restart(mk, s)
        r = s.redis()
        keys = [k for a in acked for k in a]
        all_acked += keys
        vals = r.mget(keys) if keys else []
        missing = [k for k, v in zip(keys, vals) if v != (k * 3).encode()]
        assert not missing, "%d acknowledged writes lost after kill -9, e.g. %s" % (len(missing), missing[:3])
        ma, mb, ca, cb = r.mget("ma", "mb", "ca", "cb")
        assert ma == mb and ca == cb, "MULTI/EXEC half applied: %r" % ((ma, mb, ca, cb),)
        if macked:
            assert int(ma) >= macked[-1]
            last_multi = int(ma)
    assert last_multi > 0
    # Everything from the earlier rounds is still there, and recovery said so.
    vals = s.redis().mget(all_acked)
    assert all(v == (k * 3).encode() for k, v in zip(all_acked, vals))
    assert len(su.events(coffer_bin, s.data, 1003)) >= 1


def test_second_server_is_refused(mk):
    s = mk()
    other = mk.scratch()
    p = subprocess.run([s.cofferd, "--data", s.data, "--listen", "unix:%s/o.sock" % other],
                       capture_output=True, text=True, timeout=60 * su.SLOW)
    assert p.returncode == 26, p.stderr  # COFFER_E_LOCKED
    assert "(COFFER_E_LOCKED)" in p.stderr and str(s.pid) in p.stderr
    assert s.redis().ping()
    # Same socket path, another data directory: refused too, and the first keeps its socket.
    p = subprocess.run([s.cofferd, "--data", other + "/d2", "--listen", "unix:" + s.sock],
                       capture_output=True, text=True, timeout=60 * su.SLOW)
    assert p.returncode == 109 and "another server is listening" in p.stderr, p.stderr
    assert s.redis().ping()


def test_shutdown_finishes_inflight(mk):
    s = mk()
    c = Resp(s.sock)
    n = 20000
    data = b"".join(encode("SET", "p%05d" % i, "v") for i in range(n))
    def send():
        try:
            c.send(data)
        except OSError:
            pass  # the server closed the connection at shutdown

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    su.wait_for(lambda: s.redis().exists("p00100"), what="the first writes")
    s.proc.send_signal(signal.SIGTERM)
    oks = 0
    tail = None
    try:
        while True:
            rep = c.reply()
            if rep == "OK":
                oks += 1
                continue
            tail = rep
            break
    except (EOFError, ConnectionResetError, BrokenPipeError):
        pass
    assert s.stop() == 0
    assert oks >= 100
    if tail is not None:
        assert isinstance(tail, RespError) and "COFFER_E_SHUTTING_DOWN" in tail, tail
    s2 = restart(mk, s)
    r = s2.redis()
    got = r.mget(["p%05d" % i for i in range(oks)])
    assert all(v == b"v" for v in got), "a write acknowledged before shutdown is missing"


def test_shutdown_with_stalled_client(mk):
    s = mk()
    r = s.redis()
    r.set("big", os.urandom(2 << 20))
    stalled = socket.socket(socket.AF_UNIX)
    stalled.connect(s.sock)
    stalled.sendall(encode("GET", "big") * 50)
    su.wait_for(lambda: s.redis().info("stats")["total_commands_processed"] > 2, what="the GETs")
    t0 = time.monotonic()
    assert s.stop() == 0
    assert time.monotonic() - t0 < 30 * su.SLOW
    stalled.close()


def test_config_file(mk, tmp_path):
    d = mk.scratch()
    pw = tmp_path / "pw"
    pw.write_text("abc\n")
    cfg = tmp_path / "cofferd.ini"
    cfg.write_text("[cofferd]\ndata = %s/data\nlisten = unix:%s/c.sock\nlisten = 127.0.0.1:0\n"
                   "password-file = %s\nworkers = 4\nmax-clients = 100\n" % (d, d, pw))
    s = mk(args=["--config", str(cfg)], unix=False, data="%s/data" % d)
    s.sock = "%s/c.sock" % d
    r = s.redis()
    assert r.ping()
    assert r.info("server")["workers"] == 4
    assert r.config_get("maxclients") == {"maxclients": "100"}
    host, port = s.tcp[0]
    assert redis.Redis(host=host, port=port, password="abc").ping()
    bad = tmp_path / "bad.ini"
    bad.write_text("[cofferd]\nworkers = lots\n")
    p = subprocess.run([s.cofferd, "--config", str(bad), "--data", d + "/x"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 221 and "workers" in p.stderr and "line 2" in p.stderr, p.stderr


@pytest.mark.parametrize("addr,code,text", [
    ("nonsense", 223, "COFFER_E_BAD_ADDRESS"),
    ("127.0.0.1:99999", 223, "COFFER_E_BAD_ADDRESS"),
    ("[::1:80", 223, "COFFER_E_BAD_ADDRESS"),
    ("unix:", 223, "COFFER_E_BAD_ADDRESS"),
    ("unix:/nonexistent-dir/x/s.sock", 109, "COFFER_E_LISTEN"),
    ("no.such.host.invalid:6379", 109, "COFFER_E_LISTEN"),
])
def test_listen_errors(mk, cofferd_bin, addr, code, text):
    d = mk.scratch()
    p = subprocess.run([cofferd_bin, "--data", d + "/data", "--listen", addr], capture_output=True, text=True,
                       timeout=60 * su.SLOW)
    assert p.returncode == code, p.stderr
    assert "(%s)" % text in p.stderr


def test_listen_conflicts(mk):
    d = mk.scratch()
    path = d + "/file"
    open(path, "w").close()
    s = mk(listen=["127.0.0.1:0"], unix=True)
    host, port = s.tcp[0]
    for addr in ("unix:" + path, "%s:%d" % (host, port)):
        p = subprocess.run([s.cofferd, "--data", d + "/data", "--listen", addr], capture_output=True,
                           text=True, timeout=60 * su.SLOW)
        assert p.returncode == 109 and "(COFFER_E_LISTEN)" in p.stderr, p.stderr
    assert os.path.isfile(path)


def test_checkpoint_interval(mk, tmp_path):
    """--checkpoint-interval S: a store with a little new log is checkpointed
    within S seconds (INFO's checkpoint_lsn moves); a bad value is refused."""
    d = mk.scratch()
    cfg = tmp_path / "cofferd.ini"
    cfg.write_text("[cofferd]\ncheckpoint-interval = 1\n")
    s = mk(args=["--config", str(cfg)], data="%s/data" % d)
    r = s.redis()
    before = r.info("persistence")["checkpoint_lsn"]
    r.set("k", "v")
    assert r.info("persistence")["durable_lsn"] != before
    t0 = time.monotonic()
    su.wait_for(lambda: r.info("persistence")["checkpoint_lsn"] != before, 15 * su.SLOW,
                what="a checkpoint within --checkpoint-interval 1")
    print("checkpoint after %.2f s" % (time.monotonic() - t0))
    for bad in ("0", "-1", "soon", "86401"):
        p = subprocess.run([s.cofferd, "--data", d + "/x", "--checkpoint-interval", bad],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 221 and "checkpoint-interval" in p.stderr, (bad, p.stderr)
