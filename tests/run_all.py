#!/usr/bin/python3
"""Run every Coffer test suite against one or more build directories.

  tests/run_all.py --build build --build build-asan [--build build-fuzz]
                  [--suite unit|e2e|fault|fuzz]

For each build: the cmocka unit tests (each case counted from its TAP output;
a program that dies before its plan is done counts the missing cases as
failed), the fault tests, then the pytest end-to-end tests driving that
build's programs (COFFER_BUILD_DIR). A fuzz build (configured with
-Dfuzz=true, see make fuzz) runs only the fuzz suite: each libFuzzer target
for a bounded time, one test case per target (see run_fuzz). Prints one line
per suite and ends with the summary line 'check: N passed, M failed, K
skipped'. Exit status 0 only when nothing failed and at least one test ran.
"""
import argparse
import concurrent.futures
import configparser
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAN_ENV = {
    "ASAN_OPTIONS": "abort_on_error=1:detect_leaks=1:strict_string_checks=1:allocator_may_return_null=1",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
}
UNIT_TIMEOUT = 600


class Tally:
    def __init__(self):
        self.passed = self.failed = self.skipped = 0
        self.failures = []

    def add(self, other):
        self.passed += other.passed
        self.failed += other.failed
        self.skipped += other.skipped
        self.failures += other.failures


def run_cmocka(build, prog, env):
    t = Tally()
    name = os.path.basename(prog)
    start = time.monotonic()
    try:
        p = subprocess.run([prog], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=UNIT_TIMEOUT, cwd=ROOT)
        out, rc = p.stdout.decode(errors="replace"), p.returncode
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") + "\n(timed out)\n"
        rc = -1
    plan = None
    seen = 0
    for line in out.splitlines():
        m = re.match(r"^1\.\.(\d+)", line)
        if m:
            plan = int(m.group(1))
        m = re.match(r"^(not ok|ok) \d+ - (\S+)(.*)", line)
        if m:
            seen += 1
            if m.group(1) == "ok":
                if "# SKIP" in m.group(3):
                    t.skipped += 1
                else:
                    t.passed += 1
            else:
                t.failed += 1
                t.failures.append("%s: %s:%s" % (build, name, m.group(2)))
    if plan is None or seen < plan:
        missing = (plan or 1) - seen
        t.failed += missing
        t.failures.append("%s: %s: %d case(s) did not report (exit %d)" % (build, name, missing, rc))
    elif rc != 0 and t.failed == 0:
        t.failed += 1
        t.failures.append("%s: %s: exit status %d after all cases passed" % (build, name, rc))
    if t.failed:
        sys.stdout.write(out)
    print("  %-28s %3d passed %3d failed %3d skipped  %5.1fs" % (
        name, t.passed, t.failed, t.skipped, time.monotonic() - start))
    return t


def run_pytest(build, suite_dir, env, extra):
    t = Tally()
    if not glob.glob(os.path.join(suite_dir, "test_*.py")):
        return t
    with tempfile.TemporaryDirectory() as tmp:
        xml = os.path.join(tmp, "junit.xml")
        cmd = ["/usr/bin/python3", "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
               "--junitxml=" + xml, suite_dir] + extra
        p = subprocess.run(cmd, env=env, cwd=ROOT)
        if not os.path.exists(xml):
            t.failed += 1
            t.failures.append("%s: pytest %s produced no report (exit %d)" % (build, suite_dir, p.returncode))
            return t
        for case in ET.parse(xml).getroot().iter("testcase"):
            cname = "%s::%s" % (case.get("classname"), case.get("name"))
            if case.find("failure") is not None or case.find("error") is not None:
                t.failed += 1
                t.failures.append("%s: %s" % (build, cname))
            elif case.find("skipped") is not None:
                t.skipped += 1
            else:
                t.passed += 1
        if p.returncode not in (0, 1, 5) and t.failed == 0:
            t.failed += 1
            t.failures.append("%s: pytest exit %d" % (build, p.returncode))
    return t


# ---- fuzz suite (tests/fuzz) ----
FUZZ_TIME = 60          # seconds of fuzzing per target (COFFER_FUZZ_TIME)
FUZZ_RSS_MB = 2048
FUZZ_UNIT_TIMEOUT = 30  # seconds for one input: slower is a hang (a finding)


def is_fuzz_build(bdir):
    """True for a build configured with -Dfuzz=true (make fuzz)."""
    try:
        with open(os.path.join(bdir, "meson-info", "intro-buildoptions.json")) as f:
            opts = json.load(f)
    except (OSError, ValueError):
        return False
    return any(o.get("name") == "fuzz" and o.get("value") is True for o in opts)


def fuzz_options(name):
    """-KEY=VALUE flags from tests/fuzz/fuzz_NAME.options ([libfuzzer])."""
    cp = configparser.ConfigParser()
    cp.read(os.path.join(ROOT, "tests", "fuzz", "fuzz_%s.options" % name))
    if not cp.has_section("libfuzzer"):
        return []
    return ["-%s=%s" % (k, v) for k, v in cp.items("libfuzzer")]


def fuzz_stats(log):
    """Executions and the last coverage line from libFuzzer's output."""
    st = {"execs": None, "cov": None, "ft": None, "corp": None, "secs": None, "final": ""}
    for line in log.splitlines():
        if re.match(r"^#\d+\s+DONE\s", line):
            st["final"] = line.strip()
        m = re.match(r"^stat::number_of_executed_units:\s*(\d+)", line)
        if m:
            st["execs"] = int(m.group(1))
        m = re.match(r"^Done (\d+) runs in (\d+) second", line)
        if m:
            st["execs"] = st["execs"] or int(m.group(1))
            st["secs"] = int(m.group(2))
        m = re.search(r"\bcov: (\d+) ft: (\d+) corp: (\S+)", line)
        if m:
            st["cov"], st["ft"], st["corp"] = int(m.group(1)), int(m.group(2)), m.group(3)
    return st


def fuzz_one(bdir, prog, env, secs):
    """Fuzz one target for SECS seconds over its seed corpus, then replay its
    regression inputs one by one. Returns (name, ok, summary, problems, log)."""
    name = os.path.basename(prog)[len("fuzz_"):]
    work = os.path.join(bdir, "fuzz")
    corpus = os.path.join(work, "corpus", name)        # grows; kept between runs
    artifacts = os.path.join(work, "artifacts", name)  # crash-*, leak-*, timeout-*
    seeds = os.path.join(ROOT, "tests", "fuzz", "corpus", name)
    regress = os.path.join(ROOT, "tests", "fuzz", "regress", name)
    for d in (corpus, artifacts):
        os.makedirs(d, exist_ok=True)
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    tmp = tempfile.mkdtemp(prefix="coffer-fuzz-%s-" % name, dir=shm)
    env = dict(env, TMPDIR=tmp)
    problems = []
    log = ""
    start = time.monotonic()
    try:
        cmd = [prog, "-max_total_time=%d" % secs, "-rss_limit_mb=%d" % FUZZ_RSS_MB,
               "-timeout=%d" % FUZZ_UNIT_TIMEOUT, "-print_final_stats=1",
               "-artifact_prefix=" + artifacts + "/"] + fuzz_options(name) + [corpus]
        if os.path.isdir(seeds):
            cmd.append(seeds)
        try:
            p = subprocess.run(cmd, env=env, cwd=work, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=secs + 300)
            log, rc = p.stdout.decode(errors="replace"), p.returncode
        except subprocess.TimeoutExpired as e:
            log, rc = (e.stdout or b"").decode(errors="replace") + "\n(timed out)\n", -1
        if rc != 0:
            arts = [l.split("Test unit written to ", 1)[1].strip() for l in log.splitlines()
                    if "Test unit written to " in l]
            problems.append("fuzzing exited with status %d%s" % (
                rc, (": input saved as " + ", ".join(arts)) if arts else ""))
        replayed = 0
        for f in sorted(glob.glob(os.path.join(regress, "*"))):
            if not os.path.isfile(f):
                continue
            replayed += 1
            r = subprocess.run([prog, "-rss_limit_mb=%d" % FUZZ_RSS_MB] + fuzz_options(name) + [f],
                               env=env, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=300)
            if r.returncode != 0:
                problems.append("regression input %s fails (exit %d)" % (
                    os.path.relpath(f, ROOT), r.returncode))
                log += "\n---- replay of %s ----\n" % f + r.stdout.decode(errors="replace")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    st = fuzz_stats(log)
    summary = "%-14s %s  %s execs in %.0fs, cov %s ft %s corp %s, %d regression input(s)" % (
        name, "passed" if not problems else "FAILED",
        st["execs"] if st["execs"] is not None else "?", time.monotonic() - start,
        st["cov"], st["ft"], st["corp"], replayed)
    if st["final"]:
        summary += "\n    " + st["final"]
    return name, not problems, summary, problems, log


def run_fuzz(build, bdir, env):
    """The fuzz suite of a fuzz build: every bdir/tests/fuzz/fuzz_* target
    for COFFER_FUZZ_TIME seconds (default 60) each, COFFER_FUZZ_JOBS
    (default: up to 2, one per CPU) at a time, over tests/fuzz/corpus/NAME
    and the build's own growing corpus, then tests/fuzz/regress/NAME replayed.
    One case per target: passed when nothing crashed, leaked, hung or ran out
    of memory. Each target's final statistics go to bdir/fuzz/results.txt,
    which is printed; a failing target's output is printed in full and kept
    in bdir/fuzz/NAME.log."""
    t = Tally()
    progs = sorted(p for p in glob.glob(os.path.join(bdir, "tests", "fuzz", "fuzz_*"))
                   if os.path.isfile(p) and os.access(p, os.X_OK)
                   and not p.endswith("fuzz_make_seeds"))
    if not progs:
        t.failed += 1
        t.failures.append("%s: no fuzz targets in %s/tests/fuzz (build with make fuzz)" % (build, bdir))
        return t
    secs = int(os.environ.get("COFFER_FUZZ_TIME", FUZZ_TIME))
    jobs = int(os.environ.get("COFFER_FUZZ_JOBS", min(2, os.cpu_count() or 1)))
    print("  fuzz: %d targets, %d s each, %d at a time" % (len(progs), secs, jobs))
    sys.stdout.flush()
    work = os.path.join(bdir, "fuzz")
    os.makedirs(work, exist_ok=True)
    results = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as ex:
        futs = [ex.submit(fuzz_one, bdir, p, env, secs) for p in progs]
        for fut in futs:
            name, ok, summary, problems, log = fut.result()
            with open(os.path.join(work, name + ".log"), "w") as f:
                f.write(log)
            if ok:
                t.passed += 1
            else:
                t.failed += 1
                sys.stdout.write(log)
                for pr in problems:
                    t.failures.append("%s: fuzz_%s: %s" % (build, name, pr))
            results.append(summary)
            print("  " + summary)
            sys.stdout.flush()
    with open(os.path.join(work, "results.txt"), "w") as f:
        f.write("fuzz results (%s, %d s per target)\n" % (build, secs))
        for r in results:
            f.write(r + "\n")
    print("  fuzz results written to %s" % os.path.join(work, "results.txt"))
    return t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", action="append", required=True)
    ap.add_argument("--suite", action="append", choices=["unit", "fault", "e2e", "fuzz"])
    ap.add_argument("pytest_args", nargs="*")
    a = ap.parse_args()
    suites = a.suite or ["unit", "fault", "e2e", "fuzz"]
    total = Tally()
    for build in a.build:
        bdir = os.path.abspath(build)
        sanitized = "asan" in os.path.basename(bdir)
        env = dict(os.environ)
        env["COFFER_BUILD_DIR"] = bdir
        env["CMOCKA_MESSAGE_OUTPUT"] = "TAP"
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        if sanitized:
            env.update(SAN_ENV)
        if is_fuzz_build(bdir):
            env.update(SAN_ENV)
            if "fuzz" in suites:
                print("== %s (libFuzzer, AddressSanitizer + UndefinedBehaviorSanitizer)" % build)
                sys.stdout.flush()
                total.add(run_fuzz(build, bdir, env))
            continue
        print("== %s%s" % (build, " (AddressSanitizer + UndefinedBehaviorSanitizer)" if sanitized else ""))
        sys.stdout.flush()
        if "unit" in suites:
            for prog in sorted(glob.glob(os.path.join(bdir, "tests", "test_*"))):
                if os.access(prog, os.X_OK) and not prog.endswith((".p", ".o")) and os.path.isfile(prog):
                    total.add(run_cmocka(build, prog, env))
                    sys.stdout.flush()
        if "fault" in suites:
            for prog in sorted(glob.glob(os.path.join(bdir, "tests", "fault_*"))):
                if os.access(prog, os.X_OK) and os.path.isfile(prog):
                    total.add(run_cmocka(build, prog, env))
                    sys.stdout.flush()
            total.add(run_pytest(build, os.path.join(ROOT, "tests", "fault"), env, a.pytest_args))
        if "e2e" in suites:
            tp = os.path.join(bdir, "tls-throughput.txt")
            if os.path.exists(tp):
                os.unlink(tp)
            total.add(run_pytest(build, os.path.join(ROOT, "tests", "e2e"), env, a.pytest_args))
            if os.path.exists(tp):  # a measurement, not a pass/fail: shown as is
                with open(tp) as f:
                    print("  " + f.read().strip())
    if total.failures:
        print("failed:")
        for f in total.failures:
            print("  " + f)
    print("check: %d passed, %d failed, %d skipped" % (total.passed, total.failed, total.skipped))
    ran = total.passed + total.failed
    sys.exit(0 if total.failed == 0 and ran > 0 else 1)


if __name__ == "__main__":
    main()
