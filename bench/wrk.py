"""Running wrk (the OS package) and reading its report.

wrk is the load generator because it is not the bottleneck: a C event loop that drives tens of
thousands of keep-alive requests a second from one core, where a Python client tops out near
the service's own rate and would measure itself.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Distinct requests: each one's path is the prefix plus a counter (a new cursor, a new page).
DISTINCT_LUA = """
local prefix, counter = "/", 0
init = function(args) prefix = args[1] end
request = function()
  counter = counter + 1
  return wrk.format(nil, prefix .. counter)
end
"""

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
_DURATION = r"([\d.]+)(us|ms|s|m)"


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: throughput, latency percentiles and max (ms), and failed responses."""

    rps: float
    avg: float
    p50: float
    p99: float
    max: float
    requests: int
    bad: int  # non-2xx/3xx responses plus socket errors


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS[unit]


def parse(report: str) -> WrkResult:
    """The figures of a `wrk --latency` report."""
    latency = re.search(rf"Latency\s+{_DURATION}\s+{_DURATION}\s+{_DURATION}", report)
    p50 = re.search(rf"50%\s+{_DURATION}", report)
    p99 = re.search(rf"99%\s+{_DURATION}", report)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", report)
    count = re.search(r"(\d+) requests in", report)
    if not (latency and p50 and p99 and rps and count):
        raise RuntimeError(f"cannot read wrk's report:\n{report}")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", report)
    errors = re.search(r"connect (\d+), read (\d+), write (\d+), timeout (\d+)", report)
    return WrkResult(
        rps=float(rps.group(1)),
        avg=_ms(latency.group(1), latency.group(2)),
        p50=_ms(*p50.groups()),
        p99=_ms(*p99.groups()),
        max=_ms(latency.group(5), latency.group(6)),
        requests=int(count.group(1)),
        bad=(int(bad.group(1)) if bad else 0) + (sum(map(int, errors.groups())) if errors else 0),
    )


def wrk(
    url: str,
    seconds: float,
    connections: int,
    headers: dict[str, str] | None = None,
    distinct_prefix: str | None = None,
    timeout: float = 10.0,
) -> WrkResult:
    """Run wrk against url (with distinct paths when distinct_prefix is given) and parse it."""
    exe = shutil.which("wrk")
    if exe is None:
        raise RuntimeError("wrk is not installed (Debian/Ubuntu: apt-get install wrk)")
    cmd = [
        exe, "--latency", "-t1", f"-c{connections}", f"-d{seconds:g}s", f"--timeout={timeout:g}s",
    ]  # fmt: skip
    for name, value in (headers or {}).items():
        cmd += ["-H", f"{name}: {value}"]
    with tempfile.TemporaryDirectory() as tmp:
        if distinct_prefix is not None:
            script = Path(tmp) / "distinct.lua"
            script.write_text(DISTINCT_LUA)
            cmd += ["-s", str(script), url, distinct_prefix]
        else:
            cmd.append(url)
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return parse(done.stdout)
