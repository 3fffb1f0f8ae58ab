"""The local fast path (descriptor passing over the backup connection) and
its fallback: negotiated on the connection, confirmed before data flows, and
when it fails - forced here from either side - the backup goes on over the
plain stream at once, succeeds, and event 1204 says why. The lesson of
KB Q245664: a fast path must never be the reason a backup fails."""
import json
import os
import shutil
import subprocess
import time

import pytest

from server_util import SLOW, Server, short_dir


@pytest.fixture
def work():
    d = short_dir("cfp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def backup(coffer_bin, sock, out, env_extra=None, extra=()):
    env = dict(os.environ)
    env.update(env_extra or {})
    t0 = time.monotonic()
    p = subprocess.run([coffer_bin, "--server", "unix:" + sock, "backup", "-o", out, "--json"] + list(extra),
                       capture_output=True, text=True, timeout=120 * SLOW, env=env)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout), time.monotonic() - t0


def events(coffer_bin, data, eid):
    p = subprocess.run([coffer_bin, "events", "--data", data, "--id", str(eid), "--json"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return [json.loads(l) for l in p.stdout.splitlines() if l.strip()]


def restore_and_get(coffer_bin, cofferd_bin, work, out, name, key):
    target = os.path.join(work, name)
    p = subprocess.run([coffer_bin, "restore", out, "--target", target], capture_output=True, text=True,
                       timeout=120 * SLOW)
    assert p.returncode == 0, p.stderr
    s = Server(cofferd_bin, target, sock=os.path.join(work, name + ".sock"))
    try:
        return s.redis().get(key)
    finally:
        s.stop()


def test_fast_path_used_and_restores(coffer_bin, cofferd_bin, work):
    s = Server(cofferd_bin, os.path.join(work, "d"), sock=os.path.join(work, "s.sock"))
    try:
        s.redis().set("fp", "1")
        out = os.path.join(work, "a.cbk")
        summary, _ = backup(coffer_bin, s.sock, out)
        assert summary["fast_path_files"] >= 1
        assert events(coffer_bin, s.data, 1204) == []
        # --no-fast-path: the plain stream only
        summary, _ = backup(coffer_bin, s.sock, os.path.join(work, "b.cbk"), extra=["--no-fast-path"])
        assert summary["fast_path_files"] == 0
    finally:
        s.stop()
    assert restore_and_get(coffer_bin, cofferd_bin, work, out, "ra", "fp") == b"1"


@pytest.mark.parametrize("side", ["client", "server"])
def test_forced_fast_path_failure_falls_back(coffer_bin, cofferd_bin, work, side):
    env = {"COFFER_INJECT": "backup.fastpath.%s:EIO" % side}
    s = Server(cofferd_bin, os.path.join(work, "d"), sock=os.path.join(work, "s.sock"),
               env=env if side == "server" else None)
    try:
        r = s.redis()
        for i in range(200):
            r.set("k%03d" % i, "v%d" % i)
        out = os.path.join(work, "f.cbk")
        summary, secs = backup(coffer_bin, s.sock, out, env_extra=env if side == "client" else None)
        assert summary["fast_path_files"] == 0
        assert secs < 10 * SLOW, "the fallback took %.1f s" % secs
        ev = events(coffer_bin, s.data, 1204)
        assert len(ev) == 1, ev
        f = ev[0]["fields"]
        assert f["GENERATION"] == str(summary["gen_first"])
        want = "injected failure" if side == "client" else "no file descriptor arrived"
        assert want in f["REASON"], f
        assert "plain stream" in ev[0]["message"]
    finally:
        s.stop()
    assert restore_and_get(coffer_bin, cofferd_bin, work, out, "rf", "k199") == b"v199"


def test_no_fast_path_over_tcp(coffer_bin, cofferd_bin, work):
    s = Server(cofferd_bin, os.path.join(work, "d"), sock=os.path.join(work, "s.sock"),
               listen=["127.0.0.1:0"])
    try:
        host, port = s.tcp[0]
        p = subprocess.run([coffer_bin, "--server", "%s:%d" % (host, port), "backup", "-o",
                            os.path.join(work, "t.cbk"), "--json"], capture_output=True, text=True,
                           timeout=120 * SLOW)
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["fast_path_files"] == 0
    finally:
        s.stop()
