"""Shared helpers for the client session scripts.

The scripts drive a server that speaks the Ironic v1 API (Ingot, or real Ironic
for validation) with the real python-ironicclient CLI and openstacksdk.
Every check is counted; the last line printed is `N passed, M failed`.
"""

import base64
import json
import os
import ssl
import sys
import time
import traceback
import urllib.error
import urllib.request


class Checker:
    """Counts checks and keeps going after a failure, so one run shows every problem."""

    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.current = "setup"

    def ok(self, what, cond, detail=""):
        if cond:
            self.passed += 1
            print(f"PASS [{self.current}] {what}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL [{self.current}] {what}", flush=True)
            if detail:
                for line in str(detail).rstrip().splitlines():
                    print(f"    | {line}", flush=True)
        return cond

    def eq(self, what, got, want, detail=""):
        extra = f"got {got!r}, want {want!r}"
        if detail:
            extra += "\n" + str(detail)
        return self.ok(f"{what} == {want!r}", got == want, extra)

    def step(self, name):
        return _Step(self, name)

    def finish(self):
        print(f"{self.passed} passed, {self.failed} failed", flush=True)
        return 0 if self.failed == 0 and self.passed > 0 else 1


class _Step:
    """A named group of checks; an exception inside counts as one failure."""

    def __init__(self, checker, name):
        self.checker = checker
        self.name = name

    def __enter__(self):
        self.checker.current = self.name
        self.started = time.monotonic()
        print(f"== {self.name}", flush=True)
        return self.checker

    def __exit__(self, exc_type, exc, tb):
        print(f"   ({self.name} took {time.monotonic() - self.started:.1f} s)", flush=True)
        if exc_type is None:
            return False
        self.checker.failed += 1
        print(f"FAIL [{self.name}] raised {exc_type.__name__}: {exc}", flush=True)
        for line in traceback.format_exception(exc_type, exc, tb):
            for sub in line.rstrip().splitlines():
                print(f"    | {sub}", flush=True)
        return True


def endpoint():
    url = os.environ.get("OS_ENDPOINT")
    if not url:
        print("OS_ENDPOINT is not set", file=sys.stderr)
        sys.exit(2)
    return url.rstrip("/")


def peer_is_ironic():
    """Real Ironic differs from Ingot on purpose in a few places (contract section 10)."""
    return os.environ.get("CLIENTS_PEER", "ingot") == "ironic"


def http_basic():
    """(user, password) when the session runs with OS_AUTH_TYPE=http_basic, else None."""
    if os.environ.get("OS_AUTH_TYPE") != "http_basic":
        return None
    return os.environ.get("OS_USERNAME", ""), os.environ.get("OS_PASSWORD", "")


def cacert():
    """The CA file of an https:// endpoint (OS_CACERT, as the clients read it), or None."""
    return os.environ.get("OS_CACERT") or None


def raw_request(method, path, body=None, headers=None, timeout=30):
    """Sends one HTTP request without a client library; returns (status, headers, text).

    Over https:// only the OS_CACERT CA is trusted when it is set, as the clients do."""
    url = endpoint() + path
    context = None
    if url.startswith("https://"):
        context = ssl.create_default_context(cafile=cacert())
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(url, data=data, method=method)
    creds = http_basic()
    if creds is not None:
        token = base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    for key, value in (headers or {}).items():
        req.add_header(key, value)
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            return resp.status, resp.headers, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read().decode()


def inner_error(text):
    """Decodes Ironic's error body: a JSON string holding a JSON document."""
    outer = json.loads(text)
    return json.loads(outer["error_message"])


def wait_until(fetch, pred, timeout=30.0, interval=0.1):
    """Polls `fetch()` until `pred(value)` holds; returns the last value either way."""
    deadline = time.monotonic() + timeout
    value = fetch()
    while not pred(value) and time.monotonic() < deadline:
        time.sleep(interval)
        value = fetch()
    return value
