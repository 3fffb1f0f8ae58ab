"""Who may talk to cofferd: AUTH on TCP, protected mode, Unix peer
credentials and the backup-operators group, TLS."""
import grp
import os
import socket
import ssl
import stat
import subprocess
import time

import pytest
import redis

import server_util as su
from server_util import Resp, RespError

NOBODY = ("nobody", "nogroup")


@pytest.fixture
def mk(cofferd_bin):
    yield from su.factory(cofferd_bin)


def need_root():
    if os.geteuid() != 0:
        pytest.skip("needs root to run clients as other users (setpriv) and to create groups")


def open_socket(s):
    """Let other users reach the server's socket (tests only; cofferd makes it 0660)."""
    os.chmod(os.path.dirname(s.sock), 0o755)
    os.chmod(s.sock, 0o666)


@pytest.fixture
def pwfile(tmp_path):
    p = tmp_path / "password"
    p.write_text("correct horse\n")
    return str(p)


def test_tcp_password(mk, pwfile, coffer_bin):
    s = mk(args=["--password-file", pwfile], listen=["127.0.0.1:0"])
    host, port = s.tcp[0]
    r = redis.Redis(host=host, port=port, socket_timeout=30)
    with pytest.raises(redis.exceptions.RedisError, match="Authentication required.*COFFER_E_AUTH_REQUIRED"):
        r.get("k")
    c = Resp((host, port))
    e = c.cmd("PING")
    assert isinstance(e, RespError) and e.startswith("NOAUTH") and "COFFER_E_AUTH_REQUIRED" in e
    e = c.cmd("AUTH", "wrong")
    assert isinstance(e, RespError) and e.startswith("WRONGPASS") and "COFFER_E_AUTH_FAILED" in e
    e = c.cmd("AUTH", "admin", "correct horse")
    assert isinstance(e, RespError) and e.startswith("WRONGPASS")
    assert c.cmd("AUTH", "correct horse") == "OK"
    assert c.cmd("SET", "k", "v") == "OK"
    c2 = Resp((host, port))
    assert c2.cmd("AUTH", "default", "correct horse") == "OK"
    assert c2.cmd("GET", "k") == b"v"
    # AUTH and commands in one write: each is parsed with the right limits.
    c4 = Resp((host, port))
    c4.send(b"AUTH \"correct horse\"\r\n" + su.encode("SET", "big", "x" * 100000) + b"GET k\r\n")
    assert c4.reply() == "OK" and c4.reply() == "OK" and c4.reply() == b"v"
    c3 = Resp((host, port))
    h = c3.cmd("HELLO", "3", "AUTH", "default", "correct horse")
    assert h[b"proto"] == 3
    assert c3.cmd("GET", "k") == b"v"
    e = Resp((host, port)).cmd("HELLO", "3")
    assert isinstance(e, RespError) and e.startswith("NOAUTH")
    ok = redis.Redis(host=host, port=port, password="correct horse", socket_timeout=30)
    assert ok.get("k") == b"v"
    p = subprocess.run(["redis-cli", "-h", host, "-p", str(port), "--no-auth-warning", "-a",
                        "correct horse", "GET", "k"], capture_output=True, text=True, timeout=30)
    assert p.stdout.strip() == "v"
    # Unix socket clients are authorized by credentials: no AUTH needed.
    assert s.redis().get("k") == b"v"
    ev = su.wait_for(lambda: su.events(coffer_bin, s.data, 1011), what="event 1011")
    assert ev[-1]["fields"]["PEER"].startswith("127.0.0.1:")


def test_auth_without_password(mk):
    s = mk()
    e = Resp(s.sock).cmd("AUTH", "x")
    assert isinstance(e, RespError) and "without any password configured" in e


def test_protected_mode(mk, coffer_bin):
    s = mk(listen=["127.0.0.1:0"])
    host, port = s.tcp[0]
    assert Resp((host, port)).cmd("PING") == "PONG"
    s.stop()
    # Make every TCP peer look remote (an injection point in test builds).
    s2 = mk(listen=["127.0.0.1:0"], env={"COFFER_INJECT": "server.peer_remote:EACCES"})
    host, port = s2.tcp[0]
    c = Resp((host, port))
    e = c.reply()
    assert isinstance(e, RespError) and e.startswith("DENIED") and e.endswith("(COFFER_E_NOT_LOOPBACK)")
    assert "protected mode" in e and "--password-file" in e
    assert c.closed()
    assert s2.redis().ping()  # the Unix socket is not affected
    ev = su.wait_for(lambda: su.events(coffer_bin, s2.data, 1010), what="event 1010")
    assert ev[-1]["fields"]["COMMAND"] == "connect"


def test_unix_socket_mode(mk):
    s = mk(unix=False)  # default listener: unix:DATA/cofferd.sock
    path = os.path.join(s.data, "cofferd.sock")
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
    r = redis.Redis(unix_socket_path=path, socket_timeout=30)
    assert r.ping()
    assert s.stop() == 0
    assert not os.path.exists(path), "the socket was not removed at shutdown"


def test_other_uid_is_refused(mk, coffer_bin, pwfile):
    need_root()
    s = mk(args=["--password-file", pwfile])
    open_socket(s)
    s.redis().set("secret", "1")
    for cmd in (["GET", "secret"], ["PING"], ["SET", "x", "1"], ["INFO"], ["KEYS", "*"]):
        out = s.cli(*cmd, user=NOBODY)
        assert out.startswith("NOPERM") and "uid 65534" in out and "'%s'" % cmd[0] in out, out
        assert out.endswith("(COFFER_E_ACCESS_DENIED)"), out
    assert s.redis().get("x") is None
    su.wait_for(lambda: any(e["fields"].get("PEER") == "uid 65534" and e["fields"].get("COMMAND") == "GET"
                            for e in su.events(coffer_bin, s.data, 1010)), what="event 1010 for GET")
    # MULTI queueing is checked too.
    out = s.cli(input=b"MULTI\nSET y 1\nEXEC\n", user=NOBODY)
    assert "NOPERM" in out
    # The password lifts the refusal (the same as on TCP).
    out = s.cli("--no-auth-warning", "-a", "correct horse", "GET", "secret", user=NOBODY)
    assert out == "1"


def test_backup_group_by_primary_gid(mk):
    need_root()
    s = mk(args=["--backup-group", "daemon"])
    open_socket(s)
    s.redis().set("k", "v")
    assert s.cli("PING", user=("nobody", "daemon")) == "PONG"
    assert "redis_version" in s.cli("INFO", "server", user=("nobody", "daemon"))
    out = s.cli("GET", "k", user=("nobody", "daemon"))
    assert out.startswith("NOPERM") and "(COFFER_E_ACCESS_DENIED)" in out
    # Another gid, and nobody's own groups do not include daemon: refused.
    out = s.cli("PING", user=("nobody", "nogroup"))
    assert out.startswith("NOPERM")


def test_backup_group_by_group_list(mk):
    """Membership from getgrouplist() of the peer's user: nobody's own group
    (nogroup, from /etc/passwd) counts even if the process runs with another gid."""
    need_root()
    s = mk(args=["--backup-group", "nogroup"])
    open_socket(s)
    assert s.cli("PING", user=("nobody", "daemon")) == "PONG"
    assert s.cli("GET", "k", user=("nobody", "daemon")).startswith("NOPERM")


def test_default_backup_group(mk):
    need_root()
    try:
        grp.getgrnam("coffer-backup")
    except KeyError:
        p = subprocess.run(["groupadd", "--system", "coffer-backup"], capture_output=True, text=True)
        if p.returncode != 0 and "already exists" not in p.stderr:
            pytest.skip("cannot create group coffer-backup: %s" % p.stderr.strip())
    s = mk()
    open_socket(s)
    assert s.cli("PING", user=("nobody", "coffer-backup")) == "PONG"
    assert s.cli("DBSIZE", user=("nobody", "coffer-backup")).startswith("NOPERM")


def make_cert(d):
    key, crt = os.path.join(d, "key.pem"), os.path.join(d, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", key, "-out", crt], check=True, capture_output=True, timeout=120)
    return crt, key


def test_tls(mk, tmp_path, pwfile):
    crt, key = make_cert(str(tmp_path))
    s = mk(args=["--tls-cert", crt, "--tls-key", key], listen=["127.0.0.1:0"])
    host, port = s.tcp[0]
    r = redis.Redis(host=host, port=port, ssl=True, ssl_ca_certs=crt, ssl_cert_reqs="required",
                    socket_timeout=60 * su.SLOW)
    assert r.ping()
    big = os.urandom(3 << 20)
    assert r.set("big", big) is True
    assert r.get("big") == big
    p = r.pipeline(transaction=False)
    for i in range(2000):
        p.set("t%d" % i, i)
    assert all(p.execute())
    assert r.get("t1999") == b"1999"
    assert r.info("server")["tls"] == "yes"
    # redis-cli with TLS (Debian's is built with it).
    out = subprocess.run(["redis-cli", "-h", host, "-p", str(port), "--tls", "--cacert", crt, "GET", "t7"],
                         capture_output=True, text=True, timeout=30 * su.SLOW)
    assert out.stdout.strip() == "7", out.stderr
    # A plain client on the TLS port gets nothing useful and the server goes on.
    raw = socket.create_connection((host, port), timeout=10)
    raw.sendall(b"PING\r\n")
    try:
        data = raw.recv(100)
    except (ConnectionResetError, socket.timeout):
        data = b""
    assert b"PONG" not in data
    raw.close()
    # An untrusting client fails the handshake.
    with pytest.raises(redis.exceptions.ConnectionError):
        redis.Redis(host=host, port=port, ssl=True, ssl_cert_reqs="required",
                    ssl_ca_certs=None, socket_timeout=10).ping()
    assert r.ping()
    # The Unix socket stays plain.
    assert s.redis().get("t7") == b"7"


def test_tls_protected_mode_and_password(mk, tmp_path, pwfile):
    crt, key = make_cert(str(tmp_path))
    s = mk(args=["--tls-cert", crt, "--tls-key", key], listen=["127.0.0.1:0"],
           env={"COFFER_INJECT": "server.peer_remote:EACCES"})
    host, port = s.tcp[0]
    ctx = ssl.create_default_context(cafile=crt)
    raw = ctx.wrap_socket(socket.create_connection((host, port), timeout=30), server_hostname="localhost")
    data = b""
    while True:
        chunk = raw.recv(4096)
        if not chunk:
            break
        data += chunk
    assert data.startswith(b"-DENIED") and b"COFFER_E_NOT_LOOPBACK" in data
    s2 = mk(args=["--tls-cert", crt, "--tls-key", key, "--password-file", pwfile],
            listen=["127.0.0.1:0"], env={"COFFER_INJECT": "server.peer_remote:EACCES"})
    host, port = s2.tcp[0]
    r = redis.Redis(host=host, port=port, ssl=True, ssl_ca_certs=crt, password="correct horse",
                    socket_timeout=30 * su.SLOW)
    assert r.set("a", "b") and r.get("a") == b"b"


def test_bad_tls_files(mk, tmp_path):
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate\n")
    s = mk(args=["--tls-cert", str(bogus), "--tls-key", str(bogus)], listen=["127.0.0.1:0"], start=False)
    p = subprocess.run(s.command(), capture_output=True, text=True, timeout=60 * su.SLOW)
    assert p.returncode == 106, p.stderr
    assert "(COFFER_E_TLS)" in p.stderr and str(bogus) in p.stderr


def start_backup(addr, kind="full"):
    """Send COFFER.BACKUP; returns (connection, first reply)."""
    c = Resp(addr)
    return c, c.cmd("COFFER.BACKUP", "1", kind)


def test_backup_command_roles(mk):
    s = mk(args=["--backup-group", "daemon"])
    s.redis().set("k", "v")
    c, rep = start_backup(s.sock)
    assert rep == "COFFER-BACKUP 1"
    hdr = c.s.recv(24, socket.MSG_WAITALL)
    assert hdr[:4] == b"CBK1", hdr  # the first frame of the backup protocol
    c.close()  # a vanished client: the server aborts the backup and goes on
    _, rep = start_backup(s.sock, "sideways")
    assert isinstance(rep, RespError) and "COFFER_E_INVALID_ARGUMENT" in rep
    c = Resp(s.sock)
    rep = c.cmd("COFFER.BACKUP", "99", "full")
    assert isinstance(rep, RespError) and "COFFER_E_PROTOCOL_VERSION" in rep
    assert c.cmd("MULTI") == "OK"
    assert isinstance(c.cmd("COFFER.BACKUP", "1", "full"), RespError)
    assert s.redis().get("k") == b"v"
    if os.geteuid() == 0:
        open_socket(s)
        out = s.cli("COFFER.BACKUP", "1", "full", user=NOBODY)
        assert out.startswith("NOPERM") and "'COFFER.BACKUP'" in out
        # A backup operator may start one (redis-cli shows the reply and goes).
        p = subprocess.run(["setpriv", "--reuid=nobody", "--regid=daemon", "--clear-groups", "redis-cli",
                            "-s", s.sock, "COFFER.BACKUP", "1", "copy"], capture_output=True,
                           timeout=30 * su.SLOW)
        assert p.stdout.startswith(b"COFFER-BACKUP 1"), p.stdout[:200]
    c.close()
    su.wait_for(lambda: s.redis().info("clients")["backup_sessions"] == 0, what="the sessions to end")


def test_shutdown_with_backup_client_that_does_not_read(mk):
    s = mk()
    s.redis().set("k", os.urandom(4 << 20))
    c, rep = start_backup(s.sock)
    assert rep == "COFFER-BACKUP 1"
    assert s.stop() == 0  # the session is aborted, the store closed cleanly
    c.close()


def test_garbage_flood_does_not_hide_a_wrong_password(mk, pwfile, coffer_bin):
    """Event rate limits are counted per class: 40 connections that send
    garbage (event 1012, at most 10 a second) in the same second as a wrong
    password leave the password's event 1011 logged; the garbage is cut to
    10 events, the next one saying how many were left out."""
    s = mk(args=["--password-file", pwfile], listen=["127.0.0.1:0"])
    host, port = s.tcp[0]
    t0 = time.monotonic()
    for _ in range(40):
        with socket.create_connection((host, port), timeout=10) as g:
            g.sendall(b"*1\r\n$x\r\n")
            g.settimeout(10)
            try:
                while g.recv(4096):
                    pass
            except OSError:
                pass
    c = Resp((host, port))
    e = c.cmd("AUTH", "guess")
    took = time.monotonic() - t0
    assert isinstance(e, RespError) and "COFFER_E_AUTH_FAILED" in e
    ev = su.wait_for(lambda: su.events(coffer_bin, s.data, 1011), what="event 1011")
    assert ev[-1]["fields"]["PEER"].startswith("127.0.0.1:"), ev
    garbage = su.events(coffer_bin, s.data, 1012)
    # limited (10 per one-second window), not dropped altogether
    assert 1 <= len(garbage) <= 10 * (int(took) + 2), (len(garbage), took)
