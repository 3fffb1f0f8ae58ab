#!/usr/bin/python3
"""Run Coffer's hardening measurements and write docs/reliability.md.

  tools/reliability.py [--build build] [--fuzz-build build-fuzz] [--out docs/reliability.md]
                       [--rounds N]

What it runs (against the programs of --build) and what it reports:

  fault injection   BUILD/tests/fault_crash (the crash layer: a crash at
                    every sync point, at random writes, during recovery,
                    during creation) and BUILD/tests/fault_diskfull (the
                    log's disk fills at several limits); the crash runs and
                    disk-full injections tried, pass or fail
  fuzzing           the last results of the fuzz build (FUZZ_BUILD/fuzz/
                    results.txt, written by make fuzz / tests/run_all.py);
                    'not run' when there are none - this tool does not fuzz
  end to end        tests/e2e/test_hardening.py, test_crashloop.py,
                    test_hostile_server.py and test_hostile_backup_client.py, which
                    append one JSON line per case to COFFER_RELIABILITY_OUT:
                    disk-full scenarios, corruptions tried and detected,
                    hostile inputs refused, crash-loop rounds survived,
                    backups taken and restored, acknowledged writes lost
  defects           the reasons of the xfail(strict) cases (known defects)

The tmpfs cases need root (they are skipped otherwise, and the report says
so). Exit status 0 when nothing failed and no acknowledged write was lost.
"""
import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sh(cmd, env=None, timeout=1800):
    t0 = time.monotonic()
    p = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=timeout)
    return p.returncode, p.stdout.decode(errors="replace"), time.monotonic() - t0


def fault_programs(bdir, env):
    """Run the fault programs; figures from their TAP comment lines."""
    out = {"crash_runs": 0, "crash_points": [], "diskfull": 0, "passed": 0, "failed": 0, "secs": 0.0}
    for name in ("fault_crash", "fault_diskfull"):
        prog = os.path.join(bdir, "tests", name)
        if not os.access(prog, os.X_OK):
            out["failed"] += 1
            out["crash_points"].append("%s: not built" % name)
            continue
        rc, text, secs = sh([prog], env=dict(env, CMOCKA_MESSAGE_OUTPUT="TAP"))
        out["secs"] += secs
        out["passed"] += len(re.findall(r"^ok \d+ - ", text, re.M))
        out["failed"] += len(re.findall(r"^not ok \d+ - ", text, re.M)) + (rc != 0)
        for m in re.finditer(r"^# ([^:\n]+): (\d+) crash runs \((\d+) crashed", text, re.M):
            out["crash_runs"] += int(m.group(2))
            out["crash_points"].append("%s: %s crash runs" % (m.group(1), m.group(2)))
        out["diskfull"] += len(re.findall(r"^# limit \d+: ", text, re.M))
        out["diskfull"] += len(re.findall(r"^# \d+ commits, then: ", text, re.M))
    return out


def fuzz_results(fdir):
    path = os.path.join(fdir, "fuzz", "results.txt")
    if not os.path.exists(path):
        return None, path
    rows = []
    with open(path) as f:
        head = f.readline().strip()
        for line in f:
            m = re.match(r"^(\S+)\s+(passed|FAILED)\s+(\S+) execs in (\d+)s", line)
            if m:
                rows.append((m.group(1), m.group(2), m.group(3), int(m.group(4))))
    when = datetime.datetime.fromtimestamp(os.path.getmtime(path), datetime.timezone.utc)
    return {"head": head, "rows": rows, "when": when.strftime("%Y-%m-%d %H:%M UTC")}, path


def e2e(bdir, env, rounds):
    """pytest on the hardening files: (records, junit cases)."""
    with tempfile.TemporaryDirectory() as tmp:
        rec = os.path.join(tmp, "measurements.jsonl")
        xml = os.path.join(tmp, "junit.xml")
        e = dict(env, COFFER_BUILD_DIR=bdir, COFFER_RELIABILITY_OUT=rec, PYTHONDONTWRITEBYTECODE="1")
        if rounds:
            e["COFFER_CRASHLOOP_ROUNDS"] = str(rounds)
        rc, text, secs = sh(["/usr/bin/python3", "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                             "--junitxml=" + xml, "tests/e2e/test_hardening.py",
                             "tests/e2e/test_crashloop.py", "tests/e2e/test_hostile_server.py",
                             "tests/e2e/test_hostile_backup_client.py"], env=e, timeout=3600)
        records = []
        if os.path.exists(rec):
            with open(rec) as f:
                records = [json.loads(line) for line in f if line.strip()]
        cases = []
        if os.path.exists(xml):
            for c in ET.parse(xml).getroot().iter("testcase"):
                name = c.get("name")
                if c.find("failure") is not None or c.find("error") is not None:
                    cases.append((name, "failed", None))
                elif c.find("skipped") is not None:
                    sk = c.find("skipped")
                    kind = "xfail" if sk.get("type") == "pytest.xfail" else "skipped"
                    cases.append((name, kind, sk.get("message", "")))
                else:
                    cases.append((name, "passed", None))
        return records, cases, text, secs


def md_escape(s):
    return str(s).replace("|", "\\|").replace("\n", " ")


def write_report(path, a, faults, fuzz, fuzz_path, records, cases, secs, commit):
    by = {}
    for r in records:
        by.setdefault(r["kind"], []).append(r)
    corr = by.get("corruption", [])
    hostile = by.get("hostile", [])
    disk = by.get("diskfull", [])
    loops = by.get("crashloop", [])
    n = {k: sum(1 for c in cases if c[1] == k) for k in ("passed", "failed", "xfail", "skipped")}
    lost = sum(int(r.get("lost") or 0) for r in disk + loops)
    lost_unknown = any(r.get("lost") is None for r in loops)
    silent = [r for r in corr if r.get("silent_loss")]
    L = []
    L.append("# Reliability measurements")
    L.append("")
    L.append("Written by `tools/reliability.py` on %s (commit %s, build `%s`); %d s. Rerun, as root for "
             "the tmpfs cases:" % (datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                                   commit, a.build, secs))
    L.append("")
    L.append("```")
    L.append("python3 tools/reliability.py --build %s" % a.build)
    L.append("```")
    L.append("")
    L.append("The end-to-end cases are `tests/e2e/test_hardening.py`, `test_crashloop.py`, "
             "`test_hostile_server.py` and `test_hostile_backup_client.py`;")
    L.append("the fault programs are `tests/fault/`. Cases marked as known defects are `xfail(strict=True)`")
    L.append("tests: they pass once the defect is fixed and then fail until the mark is removed.")
    L.append("")
    L.append("## Summary")
    L.append("")
    L.append("| measurement | tried | result |")
    L.append("| --- | ---: | --- |")
    L.append("| fault injection: crash layer (crash at a sync point or a write, during recovery, during "
             "creation) | %d crash runs | %s |" % (
                 faults["crash_runs"], "every acknowledged commit recovered" if not faults["failed"]
                 else "%d FAILED" % faults["failed"]))
    L.append("| fault injection: the log's disk fills (unit level) | %d limits | %s |" % (
        faults["diskfull"], "refused with the cause, store reopens intact" if not faults["failed"] else "FAILED"))
    ok_disk = [r for r in disk if r.get("resumed")]
    L.append("| disk full, end to end (log, checkpoint, reopen failing, backup output, restore target) | "
             "%d scenarios | %d refused with the cause and resumed or retried cleanly%s |" % (
                 len(disk), len(ok_disk), "" if disk else " (not run: needs root for tmpfs)"))
    det = [r for r in corr if r.get("detected")]
    L.append("| corruptions of store files and backup sets | %d | %d detected and named, %d used silently "
             "(known defects) |" % (len(corr), len(det), len(silent)))
    ref = [r for r in hostile if r.get("refused")]
    L.append("| hostile inputs (set names and sizes, symlinks, modes, secrets, slow clients, "
             "lying servers and backup clients) | %d | %d "
             "refused or bounded, %d not (known defects) |" % (len(hostile), len(ref), len(hostile) - len(ref)))
    for r in loops:
        L.append("| crash loop: SIGKILL during writes and backups (seed %s) | %s rounds | %s survived; "
                 "%s acknowledged writes checked after every restart |" % (
                     r.get("seed"), r.get("rounds"), r.get("survived"), r.get("acked")))
        if "backups_ok" in r:
            kept = r.get("backups_kept", 0)
            L.append("| backups in the crash loop | %d | %d succeeded, %d kept with their outcome unknown "
                     "(END lost after CONFIRM: %d recorded by the server, %d not, %d undetermined), %d "
                     "failed and left nothing; %d chain(s) verified, %d broken; %d restores checked |" % (
                         r["backups_ok"] + kept + r["backups_failed"], r["backups_ok"], kept,
                         r.get("kept_recorded", 0), r.get("kept_not_recorded", 0),
                         kept - r.get("kept_recorded", 0) - r.get("kept_not_recorded", 0),
                         r["backups_failed"], r["chains"], r.get("chain_breaks", 0), r["restores_checked"]))
    if not loops:
        L.append("| crash loop | 0 | not run |")
    L.append("| **acknowledged writes lost** | | **%s** |" % ("unknown (a crash loop failed)" if lost_unknown
                                                             else lost))
    if fuzz is None:
        L.append("| fuzzing | - | not run (no %s) |" % os.path.relpath(fuzz_path, ROOT))
    else:
        total = sum(int(r[2]) for r in fuzz["rows"] if r[2].isdigit())
        L.append("| fuzzing (libFuzzer, ASan+UBSan; %s) | %s executions, %d targets | %s |" % (
            fuzz["when"], format(total, ","), len(fuzz["rows"]),
            "no crash, leak or hang" if all(r[1] == "passed" for r in fuzz["rows"]) else "FAILURES"))
    L.append("| end-to-end cases | %d | %d passed, %d failed, %d known defects, %d skipped |" % (
        len(cases), n["passed"], n["failed"], n["xfail"], n["skipped"]))
    L.append("")
    if fuzz is not None:
        L.append("## Fuzzing")
        L.append("")
        L.append("From `%s` (%s):" % (os.path.relpath(fuzz_path, ROOT), fuzz["head"]))
        L.append("")
        L.append("| target | executions | seconds | result |")
        L.append("| --- | ---: | ---: | --- |")
        for name, res, execs, s in fuzz["rows"]:
            L.append("| %s | %s | %d | %s |" % (name, format(int(execs), ",") if execs.isdigit() else execs, s, res))
        L.append("")
    L.append("## Fault injection")
    L.append("")
    for c in faults["crash_points"]:
        L.append("- %s" % c)
    L.append("- disk-full limits tried in the log: %d" % faults["diskfull"])
    L.append("")
    L.append("## Disk full")
    L.append("")
    L.append("| where | refused with the cause | reads served | resumed | acknowledged writes | lost |")
    L.append("| --- | --- | --- | --- | ---: | ---: |")
    for r in disk:
        L.append("| %s | %s | %s | %s | %s | %s |" % (
            r["where"], "yes" if r.get("refused") else "NO", "yes" if r.get("reads_served") else "-",
            "yes" if r.get("resumed") else "NO", r.get("acked", "-"), r.get("lost", "-")))
    L.append("")
    L.append("## Corruptions")
    L.append("")
    L.append("| object | detected | named (file, page, generation, offset, block) | notes |")
    L.append("| --- | --- | --- | --- |")
    for r in corr:
        L.append("| %s | %s | %s | %s |" % (md_escape(r["object"]), "yes" if r.get("detected") else "**no**",
                                            "yes" if r.get("named") else "no",
                                            "acknowledged commits dropped silently" if r.get("silent_loss") else ""))
    L.append("")
    L.append("## Hostile input")
    L.append("")
    L.append("| input | refused / bounded | nothing written | notes |")
    L.append("| --- | --- | --- | --- |")
    for r in hostile:
        notes = []
        if "bounded_by" in r:
            notes.append("bounded by %s only" % r["bounded_by"])
        if "deadline" in r:
            notes.append(r["deadline"])
        if "worst_ping_s" in r:
            notes.append("worst PING beside it %.3f s" % r["worst_ping_s"])
        L.append("| %s | %s | %s | %s |" % (md_escape(r["input"]), "yes" if r.get("refused") else "**no**",
                                            "yes" if r.get("nothing_written") else "**no**", "; ".join(notes)))
    L.append("")
    L.append("## Known defects (xfail cases)")
    L.append("")
    xf = [c for c in cases if c[1] == "xfail"]
    if not xf:
        L.append("None.")
    for name, _, msg in xf:
        msg = re.sub(r"^reason: ", "", msg or "")
        L.append("- `%s`: %s" % (name, md_escape(msg)))
    failed = [c for c in cases if c[1] == "failed"]
    if failed:
        L.append("")
        L.append("## FAILED in this run")
        L.append("")
        for name, _, _ in failed:
            L.append("- `%s`" % name)
    skipped = [c for c in cases if c[1] == "skipped"]
    if skipped:
        L.append("")
        L.append("## Skipped in this run")
        L.append("")
        for name, _, msg in skipped:
            L.append("- `%s`: %s" % (name, md_escape(msg)))
    L.append("")
    with open(path, "w") as f:
        f.write("\n".join(L))
    return lost, lost_unknown, failed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--fuzz-build", default="build-fuzz")
    ap.add_argument("--out", default=os.path.join("docs", "reliability.md"))
    ap.add_argument("--rounds", type=int, default=0, help="crash-loop rounds (default: the test's)")
    a = ap.parse_args()
    bdir = os.path.abspath(os.path.join(ROOT, a.build))
    if not os.access(os.path.join(bdir, "cofferd"), os.X_OK):
        sys.exit("reliability: %s/cofferd is not built; run make first" % bdir)
    env = dict(os.environ)
    if "asan" in os.path.basename(bdir):
        env.update(ASAN_OPTIONS="abort_on_error=1:detect_leaks=1", UBSAN_OPTIONS="halt_on_error=1")
    t0 = time.monotonic()
    print("reliability: fault programs ...", flush=True)
    faults = fault_programs(bdir, env)
    print("reliability: end-to-end hardening and crash loop ...", flush=True)
    records, cases, text, _ = e2e(bdir, env, a.rounds)
    fuzz, fuzz_path = fuzz_results(os.path.abspath(os.path.join(ROOT, a.fuzz_build)))
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=30).stdout.strip() or "?"
        if subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=ROOT, timeout=30).returncode:
            commit += " with uncommitted changes"
    except (OSError, subprocess.SubprocessError):
        commit = "?"
    out = os.path.join(ROOT, a.out)
    lost, unknown, failed = write_report(out, a, faults, fuzz, fuzz_path, records, cases,
                                         int(time.monotonic() - t0), commit)
    if failed or faults["failed"]:
        sys.stdout.write(text)
    print("reliability: %d crash runs, %d disk-full limits (unit); %d e2e measurements; %d cases "
          "(%d failed); acknowledged writes lost: %s; fuzzing: %s" % (
              faults["crash_runs"], faults["diskfull"], len(records), len(cases), len(failed),
              "unknown" if unknown else lost, "not run" if fuzz is None else "%d targets" % len(fuzz["rows"])))
    print("reliability: wrote %s" % os.path.relpath(out, ROOT))
    sys.exit(0 if not failed and not faults["failed"] and lost == 0 and not unknown else 1)


if __name__ == "__main__":
    main()
