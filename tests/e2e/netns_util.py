"""Network namespaces for the end-to-end tests: two namespaces of the test's
own, joined by a veth pair, with addresses that exist only inside them.

Nothing is configured in the caller's (root) namespace: the veth ends are
created directly inside the new namespaces, and removing a namespace
removes its end of the pair (and so the pair). Names carry the test
process's pid so that concurrent runs do not collide; cleanup removes only
what this object created, also after a failure half-way.
"""
import os
import subprocess

from server_util import SLOW


def _ip(*args, check=True, timeout=30):
    p = subprocess.run(["ip"] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=timeout * SLOW)
    if check and p.returncode != 0:
        raise RuntimeError("ip %s: exit %d: %s" % (" ".join(map(str, args)), p.returncode,
                                                   p.stderr.strip()))
    return p


def available():
    """None if this process may create network namespaces, else the reason."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    try:
        probe = "cfprobe%d" % os.getpid()
        p = _ip("netns", "add", probe, check=False)
        if p.returncode != 0:
            return "ip netns add refused: %s" % p.stderr.strip()
        _ip("netns", "del", probe, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return "cannot run ip: %s" % e
    return None


class NetPair:
    """Namespaces A and B joined by a veth pair: A has ADDR_A, B has ADDR_B
    (a /30 of the 10.213.77.0/24 test range by default). Use as a context
    manager, or call close()."""

    def __init__(self, tag="cf", addr_a="10.213.77.1", addr_b="10.213.77.2", prefix=30):
        pid = os.getpid()
        self.ns_a = "%sA%d" % (tag, pid)
        self.ns_b = "%sB%d" % (tag, pid)
        self.addr_a, self.addr_b, self.prefix = addr_a, addr_b, prefix
        self.created = []
        try:
            for ns in (self.ns_a, self.ns_b):
                _ip("netns", "add", ns)
                self.created.append(ns)
                _ip("-n", ns, "link", "set", "lo", "up")
            # Both ends are born inside their namespaces: the root namespace
            # never sees an interface or an address of ours.
            _ip("link", "add", "veth0", "netns", self.ns_a, "type", "veth",
                "peer", "name", "veth0", "netns", self.ns_b)
            _ip("-n", self.ns_a, "addr", "add", "%s/%d" % (addr_a, prefix), "dev", "veth0")
            _ip("-n", self.ns_b, "addr", "add", "%s/%d" % (addr_b, prefix), "dev", "veth0")
            _ip("-n", self.ns_a, "link", "set", "veth0", "up")
            _ip("-n", self.ns_b, "link", "set", "veth0", "up")
        except BaseException:
            self.close()
            raise

    def wrap(self, ns):
        """The argv prefix that runs a program inside namespace NS."""
        return ["ip", "netns", "exec", ns]

    def close(self):
        for ns in reversed(self.created):
            _ip("netns", "del", ns, check=False)
        self.created = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
