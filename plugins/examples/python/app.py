"""verify-python: a test phase that checks a signed attachment and that a device port answers,
written in Python and built into a component by componentize-py (see README.md).

The job attaches a file (say a firmware image) and signs it: `signature` in the phase's data is
HMAC-SHA256(key, file) in hex, and the key is the secret SIGNING_KEY, which the phase must
declare. The phase reads the file from a directory the job granted, checks the signature,
optionally connects to `connect` ("a.b.c.d:port", a service on the device under test), and
reports up to three test cases (suite `verify`) and one measurement (`attachment.size`).

The data field `work` instead runs the CPU-bound benchmark workload and nothing else.
"""

import hashlib
import hmac
import json
import re
import socket
import time

# hmac falls back to pure Python here (there is no OpenSSL in the component), and that path
# imports `warnings` lazily. componentize-py bundles the modules that are imported while it
# builds the component, not the whole standard library, so a module imported only at run time
# is missing then ("No module named 'warnings'"): import it up front.
import warnings  # noqa: F401

import wit_world
from componentize_py_types import Err
from wit_world.imports import log, results, secrets, types

from work import work

NAME = "verify-python"
# The one secret this plugin declares in its manifest.
KEY_SECRET = "SIGNING_KEY"


def failure(kind, message):
    """The `err` case of `run`: componentize-py turns a raised `Err(failure)` into it."""
    return Err(kind(message))


class WitWorld(wit_world.WitWorld):
    """The component's export: `run`, called once per phase on a fresh instance."""

    def run(self, ctx: types.PhaseContext) -> types.Outcome:
        try:
            data = json.loads(ctx.data)
        except ValueError as e:
            raise failure(types.Failure_JobError, f"{NAME}: the data is not JSON: {e}")
        if not isinstance(data, dict):
            raise failure(types.Failure_JobError, f"{NAME}: the data must be a JSON object")

        if "work" in data:
            n = data["work"]
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise failure(types.Failure_JobError, f"{NAME}: `work` must be a non-negative integer")
            return types.Outcome(summary=f"work({n}) = {work(n):016x}")

        path = data.get("attachment")
        if not isinstance(path, str):
            raise failure(
                types.Failure_JobError,
                f"{NAME} needs `attachment` in its data: the path of a file in a directory the job "
                "grants, e.g. /attachments/firmware.bin",
            )
        for field in ("signature", "connect"):
            if field in data and not isinstance(data[field], str):
                raise failure(types.Failure_JobError, f"{NAME}: `{field}` must be a string")
        dut = next((f.value for f in ctx.dut if f.key == "name"), "an unnamed device")
        say(f"{NAME}: checking {path} on {dut}")

        # 1. The attachment: anything outside the granted directories does not exist here.
        started = time.monotonic()
        try:
            with open(path, "rb") as f:
                contents = f.read()
        except OSError as e:
            message = f"cannot read {path}: {e.strerror or e}"
            report("read-attachment", results.Status.ERROR, started, message)
            raise failure(types.Failure_JobError, message)
        report("read-attachment", results.Status.PASS, started, f"{len(contents)} bytes")
        results.report_measurement(results.Measurement(name="attachment.size", value=len(contents), unit="bytes"))

        # 2. The signature, checked with the secret key.
        started = time.monotonic()
        signed = "not signed"
        if "signature" not in data:
            report("signature", results.Status.SKIP, started, "no `signature` in the job's data")
        else:
            try:
                key = secrets.get(KEY_SECRET)
            except Err:
                # The host gives this one answer whether the secret exists or not.
                message = f"secret {KEY_SECRET}: not granted to this phase"
                report("signature", results.Status.ERROR, started, message)
                raise failure(types.Failure_JobError, message)
            # Never print a secret; the host would redact it from the output anyway.
            digest = hmac.new(key.encode(), contents, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(digest, data["signature"].lower()):
                message = f"{path} does not match its signature (key {KEY_SECRET})"
                report("signature", results.Status.FAIL, started, message)
                raise failure(types.Failure_TestFailure, message)
            report("signature", results.Status.PASS, started, f"HMAC-SHA256 with {KEY_SECRET}")
            signed = "signature verified"

        # 3. The device's port, when the job names one.
        reached = ""
        if "connect" in data:
            started = time.monotonic()
            try:
                connect(data["connect"])
            except OSError as e:
                message = f"cannot connect to {data['connect']}: {e.strerror or e}"
                report("reachable", results.Status.FAIL, started, message)
                raise failure(types.Failure_TestFailure, message)
            report("reachable", results.Status.PASS, started, f"connected to {data['connect']}")
            reached = f", {data['connect']} reachable"

        summary = f"{path}: {len(contents)} bytes, {signed}{reached}"
        say(summary)
        return types.Outcome(summary=summary)


def say(line):
    """Writes a line to the phase's output and the same line to its log."""
    print(line, flush=True)
    log.log(log.Level.INFO, line)


def report(name, status, started, message):
    duration_ms = int((time.monotonic() - started) * 1000)
    results.report_case(
        results.TestCase(suite="verify", name=name, status=status, duration_ms=duration_ms, message=message)
    )


ENDPOINT = re.compile(r"^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$")


def connect(endpoint):
    """Opens a TCP connection to "a.b.c.d:port" and closes it again.

    IPv4 literals only, through a plain socket: `socket.create_connection` would look the name up
    first, which needs the `idna` codec that componentize-py does not bundle, and a `dns` grant.
    """
    m = ENDPOINT.match(endpoint)
    if not m or int(m.group(2)) > 65535 or any(int(o) > 255 for o in m.group(1).split(".")):
        raise failure(types.Failure_JobError, f"{NAME}: `connect` must be an IPv4 address and port, e.g. 192.0.2.7:22")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect((m.group(1), int(m.group(2))))
