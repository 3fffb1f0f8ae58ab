"""Helpers for the cofferd end-to-end tests: start a server, wait for it,
talk RESP over a raw socket, stop it by pid.

Every wait has a deadline; the deadlines grow with SLOW in sanitizer builds
(COFFER_BUILD_DIR ending in -asan), which run 3-5 times slower.
"""
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time

BUILD = os.environ.get("COFFER_BUILD_DIR", "")
SLOW = 4.0 if "asan" in os.path.basename(BUILD.rstrip("/")) else 1.0


def reliability(kind, **fields):
    """One measurement for tools/reliability.py, when it asked for them
    (COFFER_RELIABILITY_OUT names the file; one JSON line each)."""
    path = os.environ.get("COFFER_RELIABILITY_OUT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(dict(kind=kind, **fields)) + "\n")


def deadline(seconds):
    return time.monotonic() + seconds * SLOW


def short_dir(prefix="cfd"):
    """A directory with a short path (Unix socket paths are limited to 107 bytes)."""
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


class Server:
    """One cofferd process. data: the data directory; sock: its Unix socket."""

    def __init__(self, cofferd, data, sock=None, listen=None, args=(), env=None, start=True):
        self.cofferd = cofferd
        self.data = data
        self.sock = sock
        self.listen = list(listen or [])
        if sock and "unix:" + sock not in self.listen:
            self.listen.insert(0, "unix:" + sock)
        self.args = list(args)
        self.env = env
        self.proc = None
        self.log_path = None
        self.tcp = []          # [(host, port)] as the server printed them
        if start:
            self.start()

    def command(self):
        cmd = [self.cofferd, "--data", self.data]
        for a in self.listen:
            cmd += ["--listen", a]
        return cmd + self.args

    def start(self, timeout=20):
        os.makedirs(os.path.dirname(self.data.rstrip("/")) or ".", exist_ok=True)
        self.log_path = os.path.join(os.path.dirname(self.data.rstrip("/")),
                                     "cofferd-%d.log" % int(time.time() * 1e6))
        self.logf = open(self.log_path, "wb")
        env = dict(os.environ)
        if self.env:
            env.update(self.env)
        self.proc = subprocess.Popen(self.command(), stdout=self.logf, stderr=self.logf, env=env)
        end = deadline(timeout)
        while time.monotonic() < end:
            text = self.log()
            if "cofferd: started" in text:
                m = re.search(r"cofferd: listening on (.*)", text)
                self.tcp = []
                for a in (m.group(1).split() if m else []):
                    a = a.replace("(tls)", "")
                    if a.startswith("unix:"):
                        continue
                    host, port = a.rsplit(":", 1)
                    self.tcp.append((host.strip("[]"), int(port)))
                return self
            if self.proc.poll() is not None:
                raise AssertionError("cofferd exited with %s at start:\n%s" % (self.proc.returncode, text))
            time.sleep(0.02)
        self.proc.kill()
        raise AssertionError("cofferd did not start within %ss:\n%s" % (timeout * SLOW, self.log()))

    @property
    def pid(self):
        return self.proc.pid

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Send SIG and wait; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout * SLOW)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
            raise AssertionError("cofferd did not stop within %ss after signal %d:\n%s"
                                 % (timeout * SLOW, sig, self.log()))
        self.logf.close()
        return rc

    def kill9(self):
        return self.stop(signal.SIGKILL)

    def redis(self, **kw):
        import redis
        kw.setdefault("socket_timeout", 30 * SLOW)
        return redis.Redis(unix_socket_path=self.sock, **kw)

    def cli(self, *args, timeout=30, user=None, input=None):
        """redis-cli -s SOCK ARGS; user: run through setpriv as (uid, gid)."""
        cmd = ["redis-cli", "-s", self.sock] + [str(a) for a in args]
        if user is not None:
            cmd = ["setpriv", "--reuid=%s" % user[0], "--regid=%s" % user[1], "--clear-groups"] + cmd
        p = subprocess.run(cmd, capture_output=True, timeout=timeout * SLOW, input=input)
        return p.stdout.decode(errors="replace").rstrip("\n")

    def close(self):
        if self.alive():
            self.stop(signal.SIGKILL)


class Resp:
    """A raw RESP connection: send bytes, read replies one at a time."""

    def __init__(self, addr, timeout=30):
        if isinstance(addr, str):
            self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        else:
            self.s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.s.settimeout(timeout * SLOW)
        self.s.connect(addr)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def cmd(self, *args):
        self.send(encode(*args))
        return self.reply()

    def _fill(self):
        chunk = self.s.recv(1 << 20)
        if not chunk:
            raise EOFError("connection closed by the server")
        self.buf += chunk

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def reply(self):
        """Replies as Python values; errors as RespError; RESP3 types too."""
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            return RespError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if t in (b"*", b"~"):
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        if t == b"%":
            n = int(rest)
            return {self.reply(): self.reply() for _ in range(n)}
        if t == b"_":
            return None
        if t == b"=":
            return self._exact(int(rest))
        raise AssertionError("unexpected reply line %r" % line)

    def closed(self, timeout=10):
        """True if the server closes the connection (EOF) within TIMEOUT."""
        self.s.settimeout(timeout * SLOW)
        try:
            while True:
                chunk = self.s.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def close(self):
        self.s.close()


class RespError(str):
    pass


def read_frame(c):
    """One backup frame from a Resp connection, after its RESP replies:
    (type, payload)."""
    def exact(n):
        while len(c.buf) < n:
            chunk = c.s.recv(1 << 20)
            if not chunk:
                raise EOFError("the server closed the backup connection")
            c.buf += chunk
        data, c.buf = c.buf[:n], c.buf[n:]
        return data
    hdr = exact(24)
    assert hdr[:4] == b"CBK1", hdr
    return int.from_bytes(hdr[4:6], "little"), exact(int.from_bytes(hdr[8:12], "little"))


def encode(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, int):
            a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def events(coffer_bin, data, event_id):
    """The store's events with this id, as dicts (coffer events --json)."""
    import json
    p = subprocess.run([coffer_bin, "events", "--data", data, "--id", str(event_id), "--json"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return [json.loads(line) for line in p.stdout.splitlines() if line.strip()]


def wait_for(pred, seconds=10, what="condition"):
    end = deadline(seconds)
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError("timed out waiting for %s" % what)


def factory(cofferd_bin):
    """Generator behind the tests' server fixtures: yields make(...), which
    starts a server in a fresh short directory; at the end every server
    still running is stopped with SIGTERM and must exit 0 (under ASan that
    also means: no leak, no error)."""
    import shutil
    servers, dirs = [], []

    def make(args=(), listen=None, env=None, start=True, unix=True, data=None, sock=None):
        d = short_dir()
        dirs.append(d)
        s = Server(cofferd_bin, data or os.path.join(d, "data"),
                   sock=sock or (os.path.join(d, "s.sock") if unix else None),
                   listen=listen, args=args, env=env, start=start)
        servers.append(s)
        return s

    def scratch():
        """Another short directory, removed at the end like the servers'."""
        d = short_dir()
        dirs.append(d)
        return d

    make.dirs = dirs
    make.scratch = scratch
    yield make
    problems = []
    for s in servers:
        if s.alive():
            rc = s.stop()
            if rc != 0:
                problems.append("cofferd exit status %s at SIGTERM:\n%s" % (rc, s.log()))
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
    assert not problems, "\n".join(problems)


class DropEndProxy(threading.Thread):
    """TCP 127.0.0.1:port -> cofferd's Unix socket, passing everything until
    the client's CONFIRM frame. forward=True: it forwards the CONFIRM and
    then cuts the client off before the server's END arrives (as a crash of
    the server right after it recorded the backup would). forward=False: it
    swallows the CONFIRM and cuts both sides (the server never hears it and
    records nothing; the client cannot tell the two apart)."""

    def __init__(self, unix_path, forward=True):
        super().__init__(daemon=True)
        self.unix_path, self.forward = unix_path, forward
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(4)
        self.lsock.settimeout(60 * SLOW)
        self.port = self.lsock.getsockname()[1]
        self.confirmed = threading.Event()

    def run(self):
        try:
            c, _ = self.lsock.accept()
        except OSError:
            return
        finally:
            self.lsock.close()
        s = socket.socket(socket.AF_UNIX)
        s.connect(self.unix_path)

        def up():  # client -> server
            seen = b""
            while True:
                try:
                    b = c.recv(65536)
                except OSError:
                    break
                if not b:
                    break
                seen = (seen + b)[-64:]
                if b"CBK1\x07\x00" in seen:
                    self.confirmed.set()
                    if not self.forward:
                        break
                s.sendall(b)
            try:
                s.shutdown(socket.SHUT_RDWR if not self.forward else socket.SHUT_WR)
            except OSError:
                pass

        t = threading.Thread(target=up, daemon=True)
        t.start()
        while True:
            try:
                b = s.recv(65536)
            except OSError:
                break
            if not b or self.confirmed.is_set():
                break
            c.sendall(b)
        c.shutdown(socket.SHUT_RDWR)  # wakes the other thread too
        t.join(30)
        c.close()
        s.close()


# ---------------------------------------------------------------- a fake cofferd

_XXH = []


def xxh3_64(b):
    """XXH3-64 (seed 0) from Debian's libxxhash, the library coffer links."""
    if not _XXH:
        import ctypes
        import ctypes.util
        lib = ctypes.CDLL(ctypes.util.find_library("xxhash") or "libxxhash.so.0")
        lib.XXH3_64bits.restype = ctypes.c_uint64
        lib.XXH3_64bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
        _XXH.append(lib.XXH3_64bits)
    return _XXH[0](b, len(b))


BKF = dict(INFO=1, FILE=2, DATA=3, FILE_END=4, ERROR=5, ROLLED=6, CONFIRM=7, END=8, ABORT=9,
           FILE_FD=10, FD_OK=11, FD_FAIL=12, ZEROS=13)


class FakeBackupServer(threading.Thread):
    """A stand-in for cofferd on a Unix socket, for one connection: it reads
    the client's COFFER.BACKUP request (kept in .request), answers REPLY
    (a RESP line), then calls SCRIPT(self), which speaks frames through
    send()/frame()/recv_frame(). Whatever the script does, the connection is
    closed at its end. .frames_in: the types of the frames the client sent;
    .error: the OSError that ended it (the client hung up: expected in the
    hostile cases); .bug: any other exception (a broken script: a failure)."""

    def __init__(self, path, script, reply=b"+COFFER-BACKUP 1 ZEROS\r\n"):
        super().__init__(daemon=True)
        self.path, self.script, self.reply = path, script, reply
        self.request, self.frames_in, self.error, self.bug = b"", [], None, None
        self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.lsock.bind(path)
        self.lsock.listen(1)
        self.lsock.settimeout(60 * SLOW)
        self.conn = None

    @staticmethod
    def frame(ftype, payload=b"", magic=b"CBK1", length=None, sum_delta=0):
        """One frame as cofferd writes it; LENGTH/MAGIC/SUM_DELTA falsify it."""
        h = bytearray(24)
        h[0:4] = magic
        h[4:6] = ftype.to_bytes(2, "little")
        h[8:12] = (len(payload) if length is None else length).to_bytes(4, "little")
        s = (xxh3_64(bytes(h) + payload) + sum_delta) % (1 << 64)
        h[16:24] = s.to_bytes(8, "little")
        return bytes(h) + payload

    def send(self, *frames, fds=None):
        data = b"".join(frames)
        if fds:
            socket.send_fds(self.conn, [data], fds)
        else:
            self.conn.sendall(data)

    def recv_frame(self):
        """The client's next frame: (type, payload), or None at its end."""
        def exact(n):
            b = b""
            while len(b) < n:
                c = self.conn.recv(n - len(b))
                if not c:
                    return None
                b += c
            return b
        h = exact(24)
        if h is None:
            return None
        n = int.from_bytes(h[8:12], "little")
        p = exact(n) if n else b""
        t = int.from_bytes(h[4:6], "little")
        self.frames_in.append(t)
        return t, p

    def _read_request(self):
        """The RESP array the client sends, whole."""
        buf = b""
        while True:
            lines = buf.split(b"\r\n")
            if lines and lines[0].startswith(b"*") and lines[0][1:].isdigit():
                if len(lines) - 1 >= 1 + 2 * int(lines[0][1:]):
                    return buf
            c = self.conn.recv(4096)
            if not c:
                return buf
            buf += c

    def run(self):
        try:
            self.conn, _ = self.lsock.accept()
        except OSError as e:
            self.error = e
            return
        finally:
            self.lsock.close()
        self.conn.settimeout(30 * SLOW)
        try:
            self.request = self._read_request()
            self.conn.sendall(self.reply)
            self.script(self)
        except OSError as e:  # the client went away: what the cases expect
            self.error = e
        except Exception as e:  # noqa: BLE001 - reported by the test, not lost in the thread
            self.bug = e
        finally:
            self.conn.close()
