"""W3C Trace Context: the request's trace id in, a child span to the upstream, the id in logs.

A request continues the caller's trace when its `traceparent` header is valid (W3C Trace
Context level 1), and starts a new one otherwise. The service's own span gets a fresh span id;
the response carries it in `traceparent`, each upstream call a child span id of its own, and
every log line written while the request runs carries `trace_id` (music_facade.logs reads CURRENT).
A context variable holds the trace: per thread, and per greenlet under gevent.
"""

from __future__ import annotations

import random
import re
from contextvars import ContextVar
from typing import NamedTuple

# version-traceid-parentid-flags; a future version may append fields after another "-".
_TRACEPARENT_RE = re.compile(r"\A([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?\Z")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
SAMPLED = "01"


class Trace(NamedTuple):
    """One request's place in a trace: its trace id, its own span id and the trace flags."""

    trace_id: str
    span_id: str
    flags: str

    def header(self) -> str:
        """This span as a traceparent value (for the response)."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"

    def child_header(self) -> str:
        """A new child span of this one, as a traceparent value (for an upstream call)."""
        return f"00-{self.trace_id}-{new_span_id()}-{self.flags}"


CURRENT: ContextVar[Trace | None] = ContextVar("trace", default=None)


def random_hex(digits: int) -> str:
    """`digits` random hex digits, never all zero: an id for a trace, a span or a request.

    From `random` (reseeded in every forked worker), not os.urandom: an id is unique, not
    secret, and a getrandom() system call per id was a tenth of a cached page's cost.
    """
    while True:
        value = random.getrandbits(digits * 4)
        if value:
            return f"{value:0{digits}x}"


def new_span_id() -> str:
    """16 random hex digits (8 bytes), never all zero."""
    return random_hex(16)


def _new_trace_id() -> str:
    return random_hex(32)


def parse(header: str | None) -> tuple[str, str] | None:
    """(trace id, flags) of a valid traceparent value, or None (absent or malformed)."""
    if not header:
        return None
    m = _TRACEPARENT_RE.match(header.strip())
    if m is None:
        return None
    version, trace_id, parent_id, flags, rest = m.groups()
    # Version ff is forbidden; version 00 has exactly four fields.
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    # Of the flags only "sampled" is defined; pass it on and drop the unknown bits.
    return trace_id, "01" if int(flags, 16) & 1 else "00"


def begin(traceparent: str | None) -> Trace:
    """The request's trace (continued from traceparent, or new), made current."""
    parsed = parse(traceparent)
    trace_id, flags = parsed if parsed is not None else (_new_trace_id(), SAMPLED)
    trace = Trace(trace_id, new_span_id(), flags)
    CURRENT.set(trace)
    return trace


def end() -> None:
    """The request is over: later log lines of this thread or greenlet belong to no trace."""
    CURRENT.set(None)


def outgoing() -> str:
    """The traceparent for an upstream call: a child of the current span, or a new trace."""
    trace = CURRENT.get()
    if trace is None:
        trace = Trace(_new_trace_id(), new_span_id(), SAMPLED)
    return trace.child_header()
