"""coffer events: the store's event log as an operator reads it.

No server writes events yet, so the events come from tests/evlog_writer
(tests/fault/evlog_writer.c), which writes N events through libcoffer and
prints each event's number once coffer_event_write() has returned (the event
is then durable). Killing it with SIGKILL in the middle of its writes must
lose no printed event.
"""
import json
import os
import random
import re
import signal
import subprocess
import threading

import pytest

LINE = re.compile(
    r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z)  +(\d+) (\w+) +(\S+) +(.*?)(?:  (.*))?$")
WARNING = re.compile(
    r"^coffer: warning: event log damaged at (\S+) offset (\d+): (.+) "
    r"\(COFFER_E_EVENTLOG\); record skipped$")


@pytest.fixture(scope="session")
def writer_bin(build_dir):
    path = os.path.join(build_dir, "tests", "evlog_writer")
    if not os.access(path, os.X_OK):
        pytest.fail("%s is not built (COFFER_BUILD_DIR=%s); run make first" % (path, build_dir))
    return path


@pytest.fixture
def write(writer_bin):
    """write(datadir, count=1, id=1000, run=0, message=None, *KEY=VALUE)."""
    def _write(datadir, *fields, count=1, id=1000, run=0, message=None, extra=()):
        cmd = [writer_bin, "--count", str(count), "--id", str(id), "--run", str(run)]
        if message is not None:
            cmd += ["--message", message]
        cmd += list(extra) + [str(datadir)] + list(fields)
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        assert p.stdout.split() == [str(i) for i in range(count)]
    return _write


def json_events(run, datadir, *args):
    r = run("events", "--data", datadir, "--json", *args)
    assert r.rc == 0, r
    return [json.loads(line) for line in r.out.splitlines()], r


def test_lists_events_as_text_and_json(run, write, tmp_path):
    data = tmp_path / "store"
    data.mkdir()
    write(data, "FILE=/srv/coffer/log/00000007.log", "NOTE=two words", count=3,
          message='rolled "log"\nnext')
    write(data, "CODE=153", id=1202, run=1)
    r = run("events", "--data", data)
    assert r.rc == 0, r
    assert r.err == ""
    lines = r.out.splitlines()
    assert len(lines) == 4, r
    m = LINE.match(lines[0])
    assert m, lines[0]
    assert m.group(2) == "1000" and m.group(3) == "info" and m.group(4) == "cofferd"
    assert m.group(5) == 'rolled "log"\\nnext'  # one event, one line
    assert m.group(6) == 'RUN=0 N=0 FILE=/srv/coffer/log/00000007.log NOTE="two words"'
    m = LINE.match(lines[3])
    assert m and m.group(2) == "1202" and m.group(3) == "error", lines[3]
    assert m.group(4) == "coffer-backup" and m.group(5) == "backup failed"
    assert m.group(6) == "RUN=1 N=0 CODE=153"

    evs, r = json_events(run, data)
    assert len(evs) == 4
    e = evs[0]
    assert set(e) == {"time", "time_us", "seq", "id", "name", "severity", "source",
                      "message", "fields"}
    assert e["id"] == 1000 and e["name"] == "COFFER_EV_SERVER_STARTED"
    assert e["severity"] == "info" and e["source"] == "cofferd"
    assert e["message"] == 'rolled "log"\nnext'
    assert e["fields"] == {"RUN": "0", "N": "0", "FILE": "/srv/coffer/log/00000007.log",
                           "NOTE": "two words"}
    assert e["time"] == LINE.match(lines[0]).group(1)
    assert evs[3]["name"] == "COFFER_EV_BACKUP_FAILED" and evs[3]["fields"]["CODE"] == "153"
    times = [x["time_us"] for x in evs]
    assert times == sorted(times)
    assert [x["seq"] for x in evs] == [1, 2, 3, 4]  # a new writer continues the sequence


def test_filters(run, write, tmp_path):
    data = tmp_path / "store"
    data.mkdir()
    write(data, count=3, id=1000)
    write(data, count=2, id=1202, run=1)
    write(data, count=1, id=1300, run=2)
    evs, _ = json_events(run, data)
    assert [e["id"] for e in evs] == [1000] * 3 + [1202] * 2 + [1300]

    for sel in ("1202", "BACKUP_FAILED", "coffer_ev_backup_failed"):
        got, _ = json_events(run, data, "--id", sel)
        assert [e["id"] for e in got] == [1202, 1202], sel
    got, _ = json_events(run, data, "--source", "cofferd")
    assert [e["id"] for e in got] == [1000] * 3
    got, _ = json_events(run, data, "--source", "coffer-restore")
    assert [e["id"] for e in got] == [1300]
    got, _ = json_events(run, data, "--id", "1000", "--source", "coffer-backup")
    assert got == []

    # --since: at or after the given instant, in every accepted form.
    t = evs[3]["time_us"]
    got, _ = json_events(run, data, "--since", "@%d.%06d" % (t // 10**6, t % 10**6))
    assert [e["seq"] for e in got] == [e["seq"] for e in evs[3:]]
    got, _ = json_events(run, data, "--since", evs[4]["time"])
    assert [e["seq"] for e in got] == [e["seq"] for e in evs[4:]]
    got, _ = json_events(run, data, "--since", "1h")
    assert len(got) == 6
    got, _ = json_events(run, data, "--since", "2000-01-01")
    assert len(got) == 6
    got, _ = json_events(run, data, "--since", "2999-01-01T00:00:00+01:00")
    assert got == []
    got, _ = json_events(run, data, "--since", "@%d" % (t // 10**6 + 3600), "--id", "1300")
    assert got == []

    r = run("events", "--data", data, "--since", "last tuesday")
    assert r.rc == 222, r  # COFFER_E_BAD_TIME
    assert "cannot read \"last tuesday\" as a time" in r.err and "(COFFER_E_BAD_TIME)" in r.err
    r = run("events", "--data", data, "--id", "NO_SUCH_EVENT")
    assert r.rc == 220 and "(COFFER_E_USAGE)" in r.err, r


def test_damaged_tail_is_reported_and_skipped(run, write, tmp_path):
    data = tmp_path / "store"
    data.mkdir()
    write(data, count=3)
    log = data / "events" / "events-000001.log"
    evs, _ = json_events(run, data)
    size = log.stat().st_size
    os.truncate(log, size - 5)  # the last write torn by a crash

    r = run("events", "--data", data)
    assert r.rc == 0, r
    assert len(r.out.splitlines()) == 2
    warnings = r.err.splitlines()
    assert len(warnings) == 1, r
    m = WARNING.match(warnings[0])
    assert m, warnings[0]
    assert m.group(1) == str(log)
    assert "cut short" in m.group(3)

    # The log stays usable: later events are listed after the damaged record.
    write(data, count=2, run=1)
    evs, r = json_events(run, data)
    assert [(e["fields"]["RUN"], e["fields"]["N"]) for e in evs] == [
        ("0", "0"), ("0", "1"), ("1", "0"), ("1", "1")]
    assert len(r.err.splitlines()) == 1 and WARNING.match(r.err.splitlines()[0]), r
    torn_at = int(WARNING.match(r.err.splitlines()[0]).group(2))
    assert torn_at == int(m.group(2))  # the same record as before the append
    assert 16 < torn_at < size - 5


def test_killed_writer_loses_no_acknowledged_event(run, writer_bin, tmp_path):
    data = tmp_path / "store"
    data.mkdir()
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    runs = 4
    acked = {}
    for k in range(runs):
        want = rng.randrange(20, 300)
        cmd = [writer_bin, "--count", "100000", "--run", str(k), "--max-bytes", "8192",
               "--keep", "100000", str(data), "PAD=" + "x" * rng.randrange(0, 400)]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        watchdog = threading.Timer(60, p.kill)  # bounded even if something hangs
        watchdog.start()
        try:
            last = -1
            for line in p.stdout:
                n = int(line)
                assert n == last + 1
                last = n
                if n + 1 >= want:
                    p.send_signal(signal.SIGKILL)
                    break
            for line in p.stdout:  # printed before the kill landed
                last = int(line)
            p.wait(timeout=60)
        finally:
            watchdog.cancel()
            p.stdout.close()
            p.stderr.close()
        assert p.returncode == -signal.SIGKILL, "seed %d run %d: exit %s" % (seed, k, p.returncode)
        acked[k] = last

    evs, r = json_events(run, data)
    damaged = r.err.splitlines()
    assert len(damaged) <= runs, r.err
    for w in damaged:
        assert WARNING.match(w), w
    for k in range(runs):
        ns = [int(e["fields"]["N"]) for e in evs if e["fields"].get("RUN") == str(k)]
        # Every acknowledged event, in order, whole; at most one more (written,
        # not yet printed when the signal came).
        assert ns == list(range(len(ns))), "seed %d run %d" % (seed, k)
        assert acked[k] + 1 <= len(ns) <= acked[k] + 2, "seed %d run %d: acked %d, found %d" % (
            seed, k, acked[k] + 1, len(ns))
    assert len(os.listdir(data / "events")) > 2  # it rotated under the kills too


def test_missing_store_and_server(run, tmp_path):
    r = run("events", "--data", tmp_path / "none")
    assert r.rc == 23, r  # COFFER_E_FILE_NOT_FOUND
    assert r.err.startswith("coffer: error: data directory %s does not exist" % (tmp_path / "none"))
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run("events", "--data", empty)
    assert r.rc == 0 and r.out == "" and r.err == "", r
    r = run("events", "--server", "unix:/nowhere.sock")
    assert r.rc == 102, r  # COFFER_E_CONNECT: nothing listens there
    assert "(COFFER_E_CONNECT)" in r.err and "unix:/nowhere.sock" in r.err
    r = run("events", "--data", empty, "--server", "unix:/x")
    assert r.rc == 220 and "not both" in r.err, r
