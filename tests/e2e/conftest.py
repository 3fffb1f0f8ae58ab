"""Shared fixtures of the end-to-end tests: they drive the real programs.

COFFER_BUILD_DIR names the build whose programs are tested (tests/run_all.py
sets it for each build); the default is <repo>/build.
"""
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("COFFER_BUILD_DIR", os.path.join(ROOT, "build"))


def _prog(name):
    path = os.path.join(BUILD, name)
    if not os.access(path, os.X_OK):
        pytest.fail("%s is not built (COFFER_BUILD_DIR=%s); run make first" % (path, BUILD))
    return path


@pytest.fixture(scope="session")
def repo_root():
    return ROOT


@pytest.fixture(scope="session")
def build_dir():
    return BUILD


@pytest.fixture(scope="session")
def coffer_bin():
    return _prog("coffer")


@pytest.fixture(scope="session")
def cofferd_bin():
    return _prog("cofferd")


class Result:
    def __init__(self, p):
        self.rc = p.returncode
        self.out = p.stdout
        self.err = p.stderr

    def __repr__(self):
        return "rc=%d\nstdout:\n%s\nstderr:\n%s" % (self.rc, self.out, self.err)


@pytest.fixture
def run(coffer_bin):
    """run("explain", "20") runs build/coffer with a bounded time."""
    def _run(*args, env=None, timeout=60, input=None):
        p = subprocess.run([coffer_bin] + [str(a) for a in args], capture_output=True,
                           text=True, env=env, timeout=timeout, input=input)
        return Result(p)
    return _run
