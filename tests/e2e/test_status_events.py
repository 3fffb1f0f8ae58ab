"""`coffer status` (COFFER.STATUS) and `coffer events --server` (COFFER.EVENTS):
the server's state, the running and the last backups, and its event log
read remotely, by root, by a backup operator, and refused to anybody else."""
import grp
import json
import os
import subprocess
import time

import pytest

import server_util as su
from server_util import Resp

NOBODY_UID = 65534
ACCESS_DENIED = 130   # COFFER_E_ACCESS_DENIED
AUTH_REQUIRED = 131   # COFFER_E_AUTH_REQUIRED
CONNECT = 102         # COFFER_E_CONNECT


@pytest.fixture
def mk(cofferd_bin):
    yield from su.factory(cofferd_bin)


def coffer(coffer_bin, *args, server=None, env=None, user=None, timeout=60):
    cmd = [coffer_bin]
    if server:
        cmd += ["--server", server]
    cmd += [str(a) for a in args]
    if user is not None:
        cmd = ["setpriv", "--reuid=%d" % user[0], "--regid=%d" % user[1], "--clear-groups"] + cmd
    e = dict(os.environ)
    e.pop("COFFER_SERVER", None)
    e.pop("COFFER_PASSWORD", None)
    if env:
        e.update(env)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout * su.SLOW, env=e)


def ok(p):
    assert p.returncode == 0, "exit %d\nstdout:\n%s\nstderr:\n%s" % (p.returncode, p.stdout, p.stderr)
    return p


def addr(s):
    return "unix:" + s.sock


def raw_status(coffer_bin, s, **kw):
    out = ok(coffer(coffer_bin, "status", "--raw", server=addr(s), **kw)).stdout
    return dict(line.split(":", 1) for line in out.splitlines() if ":" in line)


def jlines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def iso_us(t):
    """'2026-11-25T19:30:01.123456Z' -> microseconds since the epoch."""
    import calendar
    base, frac = t.rstrip("Z").split(".")
    return calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S")) * 1000000 + int(frac.ljust(6, "0"))


def need_root():
    if os.geteuid() != 0:
        pytest.skip("needs root to run clients as other users (setpriv) and to create groups")


def open_socket(s):
    """Let other users reach the server's socket (tests only; cofferd makes it 0660)."""
    os.chmod(os.path.dirname(s.sock), 0o755)
    os.chmod(s.sock, 0o666)


def backup_gid():
    try:
        return grp.getgrnam("coffer-backup").gr_gid
    except KeyError:
        p = subprocess.run(["groupadd", "--system", "coffer-backup"], capture_output=True, text=True)
        if p.returncode != 0 and "already exists" not in p.stderr:
            pytest.skip("cannot create group coffer-backup: %s" % p.stderr.strip())
        return grp.getgrnam("coffer-backup").gr_gid


def test_status_fresh_server(mk, coffer_bin):
    s = mk()
    p = ok(coffer(coffer_bin, "status", server=addr(s)))
    out = p.stdout
    assert addr(s) in out and "pid %d" % s.pid in out and "cofferd 0.1.0" in out, out
    assert os.path.realpath(s.data) in out, out
    assert "backup in progress: none" in out, out
    for kind in ("full", "incremental", "differential"):
        assert ("last %s:" % kind) in out
    assert out.count("none") >= 4, out
    st = raw_status(coffer_bin, s)
    assert st["process_id"] == str(s.pid)
    assert st["backup_running"] == "0"
    assert int(st["log_generation_first"]) >= 1
    assert int(st["log_generation_current"]) >= int(st["log_generation_first"])
    assert "/" in st["checkpoint_lsn"] and "/" in st["durable_lsn"]
    assert st["last_full_id"] == st["last_incremental_id"] == st["last_differential_id"] == "none"
    assert st["store_fatal"] == "0" and st["circular_logging"] == "0"
    assert abs(iso_us(st["started"]) / 1e6 - time.time()) < 120
    # the global --server is the default; COFFER_SERVER gives it as well
    ok(coffer(coffer_bin, "status", env={"COFFER_SERVER": addr(s)}))


def test_status_nothing_listening(mk, coffer_bin):
    d = mk.scratch()
    a = "unix:" + os.path.join(d, "none.sock")
    p = coffer(coffer_bin, "status", server=a)
    assert p.returncode == CONNECT, p.stderr
    assert a in p.stderr and "(COFFER_E_CONNECT)" in p.stderr, p.stderr
    p = coffer(coffer_bin, "events", "--server", a)
    assert p.returncode == CONNECT and a in p.stderr, p.stderr
    p = coffer(coffer_bin, "status", "extra", server=a)
    assert p.returncode != 0 and "COFFER_E_USAGE" in p.stderr


def test_status_shows_running_backup(mk, coffer_bin):
    s = mk()
    s.redis().set("k", "v")
    t0 = time.time()
    c = Resp(s.sock)
    c.send(su.encode("COFFER.BACKUP", "1", "full"))
    assert c.reply() == "COFFER-BACKUP 1"
    # the backup now streams its frames and waits for a confirmation that never comes
    st = su.wait_for(lambda: (lambda x: x if x["backup_running"] == "1" else None)(raw_status(coffer_bin, s)),
                     seconds=20, what="the backup to show as running")
    assert st["backup_type"] == "full"
    assert st["backup_who"].startswith("uid 0"), st
    since = iso_us(st["backup_since"]) / 1e6
    assert t0 - 2 <= since <= time.time() + 2, (t0, since)
    out = ok(coffer(coffer_bin, "status", server=addr(s))).stdout
    line = [ln for ln in out.splitlines() if ln.startswith("backup in progress:")][0]
    assert "full backup running since " + st["backup_since"] in line and "started by uid 0" in line, line
    # the client vanishes: the server aborts and the status says so
    c.close()
    su.wait_for(lambda: raw_status(coffer_bin, s)["backup_running"] == "0", seconds=30,
                what="the aborted backup to end")
    assert raw_status(coffer_bin, s)["last_full_id"] == "none"


def test_status_after_backups(mk, coffer_bin):
    s = mk()
    s.redis().set("k", "v")
    d = mk.scratch()
    full = json.loads(ok(coffer(coffer_bin, "backup", "--json", "--quiet", "-o", os.path.join(d, "f.cbk"),
                                server=addr(s))).stdout)
    s.redis().set("k", "w")
    inc = json.loads(ok(coffer(coffer_bin, "backup", "--type", "incremental", "--json", "--quiet", "-o",
                               os.path.join(d, "i.cbk"), server=addr(s))).stdout)
    st = raw_status(coffer_bin, s)
    assert st["backup_running"] == "0"
    assert st["last_full_id"] == full["id"]
    assert st["last_full_generations"] == "%d-%d" % (full["gen_first"], full["gen_last"])
    assert iso_us(st["last_full_start"]) <= iso_us(st["last_full_end"])
    assert st["last_incremental_id"] == inc["id"]
    assert st["last_incremental_generations"] == "%d-%d" % (inc["gen_first"], inc["gen_last"])
    assert st["last_differential_id"] == "none"
    out = ok(coffer(coffer_bin, "status", server=addr(s))).stdout
    line = [ln for ln in out.splitlines() if ln.startswith("last full:")][0]
    assert full["id"] in line and "generations %d-%d" % (full["gen_first"], full["gen_last"]) in line, line
    line = [ln for ln in out.splitlines() if ln.startswith("last incremental:")][0]
    assert inc["id"] in line, line
    assert "last differential:  none" in out, out


def test_events_server(mk, coffer_bin):
    s = mk()
    d = mk.scratch()
    ok(coffer(coffer_bin, "backup", "--quiet", "-o", os.path.join(d, "f.cbk"), server=addr(s)))
    text = ok(coffer(coffer_bin, "events", "--server", addr(s))).stdout
    assert " 1000 info " in text and " 1201 info " in text, text
    # the same text and JSON as reading the store's log on the server's machine
    assert text == ok(coffer(coffer_bin, "events", "--data", s.data)).stdout
    remote = ok(coffer(coffer_bin, "events", "--server", addr(s), "--json")).stdout
    assert remote == ok(coffer(coffer_bin, "events", "--data", s.data, "--json")).stdout
    evs = jlines(remote)
    assert [e["id"] for e in evs if e["id"] in (1000, 1201)] == [1000, 1201]
    started = [e for e in evs if e["id"] == 1000][0]
    assert started["fields"]["PID"] == str(s.pid) and started["name"] == "COFFER_EV_SERVER_STARTED"
    # filters: --id (number or name), --source, --since
    only = jlines(ok(coffer(coffer_bin, "events", "--server", addr(s), "--id", "1201", "--json")).stdout)
    assert len(only) == 1 and only[0]["id"] == 1201 and only[0]["fields"]["TYPE"] == "full"
    byname = ok(coffer(coffer_bin, "events", "--server", addr(s), "--id", "SERVER_STARTED")).stdout
    assert byname.count("\n") == 1 and " 1000 " in byname
    src = jlines(ok(coffer(coffer_bin, "events", "--server", addr(s), "--source", "coffer-backup",
                           "--json")).stdout)
    assert src and all(e["source"] == "coffer-backup" for e in src) and 1201 in [e["id"] for e in src]
    assert ok(coffer(coffer_bin, "events", "--server", addr(s), "--since", "@%d" % (time.time() + 3600))).stdout == ""
    cut = only[0]["time_us"]
    later = jlines(ok(coffer(coffer_bin, "events", "--server", addr(s), "--json", "--since",
                             "@%d.%06d" % (cut // 1000000, cut % 1000000))).stdout)
    assert later and later[0]["id"] == 1201 and all(e["time_us"] >= cut for e in later)
    # without --data or --server: the global --server, then COFFER_SERVER
    assert ok(coffer(coffer_bin, "events", "--id", "1201", server=addr(s))).stdout.count(" 1201 ") == 1
    assert ok(coffer(coffer_bin, "events", "--id", "1201", env={"COFFER_SERVER": addr(s)})).stdout.count(" 1201 ") == 1
    p = coffer(coffer_bin, "events", "--server", addr(s), "--data", s.data)
    assert p.returncode != 0 and "COFFER_E_USAGE" in p.stderr
    # the raw command's argument checks
    c = Resp(s.sock)
    assert "COFFER_E_INVALID_ARGUMENT" in c.cmd("COFFER.EVENTS", "yesterday")
    assert "COFFER_E_INVALID_ARGUMENT" in c.cmd("COFFER.EVENTS", "0", "123456")
    assert c.cmd("COFFER.EVENTS", "0", "1201").count(b"\n") == 1
    c.close()


def test_status_and_events_over_tcp_with_password(mk, coffer_bin, tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    s = mk(args=["--password-file", str(pw)], listen=["127.0.0.1:0"])
    host, port = s.tcp[0]
    a = "%s:%d" % (host, port)
    p = coffer(coffer_bin, "status", server=a)
    assert p.returncode == AUTH_REQUIRED and "(COFFER_E_AUTH_REQUIRED)" in p.stderr, p.stderr
    out = ok(coffer(coffer_bin, "--password-file", str(pw), "status", server=a)).stdout
    assert "pid %d" % s.pid in out
    ev = ok(coffer(coffer_bin, "events", "--id", "1000", server=a, env={"COFFER_PASSWORD": "s3cret"})).stdout
    assert " 1000 " in ev


def test_backup_operator_may_read_status_and_events(mk, coffer_bin):
    need_root()
    gid = backup_gid()
    s = mk()  # default backup group: coffer-backup
    open_socket(s)
    s.redis().set("secret", "1")
    op = (NOBODY_UID, gid)
    out = ok(coffer(coffer_bin, "status", server=addr(s), user=op)).stdout
    assert "pid %d" % s.pid in out and "backup in progress: none" in out
    ev = ok(coffer(coffer_bin, "events", "--server", addr(s), "--id", "1000", user=op)).stdout
    assert " 1000 " in ev
    # but no data
    got = s.cli("GET", "secret", user=op)
    assert got.startswith("NOPERM") and got.endswith("(COFFER_E_ACCESS_DENIED)"), got


def test_others_are_refused_status_and_events(mk, coffer_bin):
    need_root()
    backup_gid()
    s = mk()
    open_socket(s)
    other = (NOBODY_UID, NOBODY_UID)  # nobody:nogroup, not in coffer-backup
    p = coffer(coffer_bin, "status", server=addr(s), user=other)
    assert p.returncode == ACCESS_DENIED, p.stderr
    assert "uid 65534" in p.stderr and "'COFFER.STATUS'" in p.stderr and "(COFFER_E_ACCESS_DENIED)" in p.stderr
    p = coffer(coffer_bin, "events", "--server", addr(s), user=other)
    assert p.returncode == ACCESS_DENIED and "'COFFER.EVENTS'" in p.stderr, p.stderr
    assert p.stdout == ""

    def refused():
        cmds = {e["fields"].get("COMMAND") for e in su.events(coffer_bin, s.data, 1010)
                if e["fields"].get("PEER") == "uid 65534"}
        return {"COFFER.STATUS", "COFFER.EVENTS"} <= cmds
    su.wait_for(refused, seconds=10, what="event 1010 for COFFER.STATUS and COFFER.EVENTS")
    # root reads them remotely too
    assert ok(coffer(coffer_bin, "events", "--server", addr(s), "--id", "1010")).stdout.count(" 1010 ") >= 2
