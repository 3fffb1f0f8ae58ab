"""The session matrix: the same `coffer backup` must succeed, and its set
restore to identical content, from every kind of session an operator may
stand in - the guarantee that Microsoft KB Q245664 lacked (an Exchange backup
that worked at the console failed from a Terminal Server session with
c7ff000d, hrCommunicationError, because the local fast path used names
private to the client's session).

Every case runs the real `coffer` binary against one real cofferd whose
socket lives in a shared directory (as /run/coffer under systemd), never in
/tmp. Namespace cases need root (CI runs as root); where the kernel refuses,
the case is skipped with the reason printed (pytest -rs) and counted.
"""
import grp
import os
import shutil
import subprocess
import tempfile

import pytest

from server_util import SLOW, Server

GROUP = "coffer-backup"
ROOT = os.geteuid() == 0


def can(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="module")
def shared():
    """A shared, non-/tmp directory for the socket and the sets (like /run/coffer)."""
    base = "/run" if ROOT and os.access("/run", os.W_OK) else os.path.expanduser("~")
    d = tempfile.mkdtemp(prefix="coffer-e2e-", dir=base)
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def nsbins(shared, coffer_bin, cofferd_bin):
    """Copies of the programs outside /tmp: the cases that mount a fresh
    tmpfs on /tmp would hide a build that lives there."""
    d = os.path.join(shared, "bin")
    os.makedirs(d, exist_ok=True)
    out = []
    for b in (coffer_bin, cofferd_bin):
        dst = os.path.join(d, os.path.basename(b))
        shutil.copy2(b, dst)
        out.append(dst)
    return out


@pytest.fixture(scope="module")
def backup_gid():
    try:
        return grp.getgrnam(GROUP).gr_gid
    except KeyError:
        if not ROOT:
            return None
        subprocess.run(["groupadd", "--system", GROUP], check=True)
        return grp.getgrnam(GROUP).gr_gid


@pytest.fixture(scope="module")
def server(cofferd_bin, shared, backup_gid):
    s = Server(cofferd_bin, os.path.join(shared, "data"), sock=os.path.join(shared, "cofferd.sock"))
    r = s.redis()
    pipe = r.pipeline(transaction=False)
    for i in range(3000):
        pipe.set("session:%05d" % i, "value-%d" % i)
    pipe.execute()
    r.hset("hash", mapping={"a": "1", "b": "2"})
    yield s
    s.close()


def content(cofferd_bin, data, sock):
    s = Server(cofferd_bin, data, sock=sock)
    try:
        r = s.redis()
        keys = sorted(r.keys("*"))
        return {k: (r.get(k) if r.type(k) == b"string" else r.hgetall(k)) for k in keys}
    finally:
        s.stop()


def check_set(coffer_bin, cofferd_bin, server, out, shared, name):
    p = subprocess.run([coffer_bin, "verify", out], capture_output=True, text=True, timeout=120 * SLOW)
    assert p.returncode == 0, p.stderr
    target = os.path.join(shared, "restored-" + name)
    p = subprocess.run([coffer_bin, "restore", out, "--target", target], capture_output=True, text=True,
                       timeout=300 * SLOW)
    assert p.returncode == 0, p.stderr
    got = content(cofferd_bin, target, os.path.join(shared, "r-%s.sock" % name[:20]))
    want = {k: (v if isinstance(v, bytes) else v) for k, v in got.items()}
    live = server.redis()
    for i in range(0, 3000, 7):
        assert got[b"session:%05d" % i] == b"value-%d" % i
    assert got[b"hash"] == {b"a": b"1", b"b": b"2"}
    assert len(got) <= live.dbsize()
    shutil.rmtree(target, ignore_errors=True)
    return want


def run_case(coffer_bin, cofferd_bin, server, shared, name, wrap, out_dir=None, env=None, preexec=None,
             shell=None):
    out_dir = out_dir or shared
    out = os.path.join(out_dir, name + ".cbk")
    if os.path.exists(out):
        os.unlink(out)
    args = [coffer_bin, "--server", "unix:" + server.sock, "backup", "--type", "copy", "-o", out, "--quiet"]
    cmd = wrap + args if shell is None else ["sh", "-c", shell % " ".join(args)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300 * SLOW, env=env,
                       stdin=subprocess.DEVNULL, preexec_fn=preexec)
    assert p.returncode == 0, "%s: exit %d\n%s%s" % (name, p.returncode, p.stdout, p.stderr)
    check_set(coffer_bin, cofferd_bin, server, out, shared, name)
    os.unlink(out)


def test_own_session(coffer_bin, cofferd_bin, server, shared):
    run_case(coffer_bin, cofferd_bin, server, shared, "own", [])


def test_cron_like_setsid_no_tty_stdin_closed(coffer_bin, cofferd_bin, server, shared):
    run_case(coffer_bin, cofferd_bin, server, shared, "setsid", [],
             shell="exec 0<&- ; exec setsid --wait %s")


def test_empty_environment(coffer_bin, cofferd_bin, server, shared):
    run_case(coffer_bin, cofferd_bin, server, shared, "envi", ["env", "-i"])


@pytest.mark.skipif(not ROOT, reason="mount namespaces need root")
def test_private_tmp_and_shm(nsbins, cofferd_bin, server, shared):
    if not can(["unshare", "-m", "true"]):
        pytest.skip("the kernel refuses a mount namespace here (unshare -m)")
    run_case(nsbins[0], cofferd_bin, server, shared, "privtmp", [],
             shell="exec unshare -m sh -c 'mount -t tmpfs tmpfs /tmp && mount -t tmpfs tmpfs /dev/shm "
                   "&& exec %s'")


@pytest.mark.skipif(not ROOT, reason="IPC namespaces need root")
def test_private_ipc_namespace(coffer_bin, cofferd_bin, server, shared):
    """Q245664: a fast path keyed by session-private IPC names breaks here."""
    if not can(["unshare", "-i", "true"]):
        pytest.skip("the kernel refuses an IPC namespace here (unshare -i)")
    run_case(coffer_bin, cofferd_bin, server, shared, "ipcns", ["unshare", "-i"])


@pytest.mark.skipif(not ROOT, reason="PID namespaces need root")
def test_private_pid_namespace(coffer_bin, cofferd_bin, server, shared):
    if not can(["unshare", "-p", "-f", "true"]):
        pytest.skip("the kernel refuses a PID namespace here (unshare -p -f)")
    run_case(coffer_bin, cofferd_bin, server, shared, "pidns", ["unshare", "-p", "-f"])


def test_q245664_backup_from_terminal_server_like_session(nsbins, cofferd_bin, server, shared):
    """The article's scenario, as Linux has it: the backup client runs in a
    session of its own - new session id, no terminal, empty environment,
    private IPC, PID and mount namespaces with their own /tmp and /dev/shm -
    while the server runs elsewhere. With a session-keyed fast path (named
    shared memory and events, as Exchange 5.5's) this is the case that fails;
    Coffer must succeed the same as at the console."""
    if not ROOT or not can(["unshare", "-m", "-i", "-p", "-f", "true"]):
        pytest.skip("namespaces not available here (needs root and unshare -m -i -p -f)")
    run_case(nsbins[0], cofferd_bin, server, shared, "q245664", [],
             shell="exec 0<&- ; exec setsid --wait env -i unshare -m -i -p -f sh -c "
                   "'mount -t tmpfs tmpfs /tmp && mount -t tmpfs tmpfs /dev/shm && exec %s'")


@pytest.mark.skipif(not ROOT, reason="switching users needs root")
def test_other_uid_in_backup_group(coffer_bin, cofferd_bin, server, shared, backup_gid):
    out_dir = os.path.join(shared, "nobody")
    os.makedirs(out_dir, exist_ok=True)
    os.chown(out_dir, 65534, backup_gid)
    run_case(coffer_bin, cofferd_bin, server, shared, "groupmember",
             ["setpriv", "--reuid=65534", "--regid=%d" % backup_gid, "--clear-groups"], out_dir=out_dir)


@pytest.mark.skipif(not ROOT, reason="switching users needs root")
def test_uid_outside_group_is_refused(coffer_bin, server, shared):
    out_dir = os.path.join(shared, "outsider")
    os.makedirs(out_dir, exist_ok=True)
    os.chmod(out_dir, 0o777)
    out = os.path.join(out_dir, "x.cbk")
    p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", coffer_bin,
                        "--server", "unix:" + server.sock, "backup", "-o", out],
                       capture_output=True, text=True, timeout=60 * SLOW)
    assert p.returncode == 130, p.stderr  # COFFER_E_ACCESS_DENIED (or the socket mode refuses)
    assert "(COFFER_E_ACCESS_DENIED)" in p.stderr
    assert "coffer: hint:" in p.stderr
    assert not os.path.exists(out)


@pytest.mark.skipif(not ROOT, reason="mount namespaces need root")
def test_server_with_private_tmp(coffer_bin, cofferd_bin, nsbins, shared):
    """cofferd under PrivateTmp=yes: its /tmp is its own; the socket is in a
    shared directory; a client outside its namespace backs up."""
    if not can(["unshare", "-m", "true"]):
        pytest.skip("the kernel refuses a mount namespace here (unshare -m)")
    data = os.path.join(shared, "ptdata")
    sock = os.path.join(shared, "pt.sock")
    s = Server(nsbins[1], data, sock=sock, start=False)
    base = s.command()
    s.command = lambda: ["unshare", "-m", "sh", "-c",
                         "mount -t tmpfs tmpfs /tmp && exec " + " ".join(base)]
    s.start()
    try:
        s.redis().set("privtmp", "yes")
        out = os.path.join(shared, "pt.cbk")
        p = subprocess.run([coffer_bin, "--server", "unix:" + sock, "backup", "-o", out, "--quiet"],
                           capture_output=True, text=True, timeout=120 * SLOW)
        assert p.returncode == 0, p.stderr
        target = os.path.join(shared, "pt-restored")
        p = subprocess.run([coffer_bin, "restore", out, "--target", target], capture_output=True,
                           text=True, timeout=120 * SLOW)
        assert p.returncode == 0, p.stderr
    finally:
        s.stop()
    got = content(cofferd_bin, target, os.path.join(shared, "ptr.sock"))
    assert got[b"privtmp"] == b"yes"
