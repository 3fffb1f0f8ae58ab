#!/usr/bin/python3
"""Run every Coffer test suite against one or more build directories.

  tests/run_all.py --build build --build build-asan [--suite unit|e2e|fault]

For each build: the cmocka unit tests (each case counted from its TAP output;
a program that dies before its plan is done counts the missing cases as
failed), the fault tests, then the pytest end-to-end tests driving that
build's programs (COFFER_BUILD_DIR). Prints one line per suite and ends with
the summary line 'check: N passed, M failed, K skipped'. Exit status 0 only
when nothing failed and at least one test ran.
"""
import argparse
import glob
import os
import re
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", action="append", required=True)
    ap.add_argument("--suite", action="append", choices=["unit", "fault", "e2e"])
    ap.add_argument("pytest_args", nargs="*")
    a = ap.parse_args()
    suites = a.suite or ["unit", "fault", "e2e"]
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
            total.add(run_pytest(build, os.path.join(ROOT, "tests", "e2e"), env, a.pytest_args))
    if total.failures:
        print("failed:")
        for f in total.failures:
            print("  " + f)
    print("check: %d passed, %d failed, %d skipped" % (total.passed, total.failed, total.skipped))
    ran = total.passed + total.failed
    sys.exit(0 if total.failed == 0 and ran > 0 else 1)


if __name__ == "__main__":
    main()
