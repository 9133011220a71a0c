"""Every request's steps, in one ordered list: what each response gets, whoever answers it.

Three entrances answer requests: /music's WSGI handler (music_facade.music), Flask (every
other route, 404 and 405: install below) and gunicorn's own refusals (music_facade.worker).
Each builds an `Exchange` for the request and runs the same `Pipeline` over it:

    begin    before the answer, first step to last: request id → trace → caller
    headers  once the answer's status is known, first to last: CORS → common headers
    end      after the answer went out, last step to first: access line → metrics → the
             trace is over (a step's end runs while what the steps before it began still
             holds, as in nested middleware: the access line is in the trace)
    done     after a streamed body's last chunk, or its caller hung up: metrics

The order is the list in `steps`; a new response header is one more step there. An entrance
knows only the three phases. A step finds what it needs on the Exchange and does nothing when
its entrance cannot know it: a refusal has no route to log or count, a stream is counted when
it ends.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Flask, Response, current_app, g, request

from . import access, metrics, trace
from .auth import Authenticator, Caller, presented
from .cors import Cors

Headers = list[tuple[str, str]]
NOBODY = Caller(None)


class Exchange:
    """One request's facts, filled in by the steps and the entrance that answers it."""

    __slots__ = (
        "cache",
        "caller",
        "environ",
        "method",
        "path",
        "request_id",
        "route",
        "started",
        "status",
        "streamed",
        "trace",
        "user",
    )

    def __init__(
        self, environ: dict[str, Any], method: str, path: str | None, route: str | None
    ) -> None:
        self.environ = environ
        self.method = method
        self.path = path  # as the access line names it; None: no line (a refusal)
        self.route = route  # as metrics label it; None: not counted (a refusal)
        self.started = time.monotonic()
        self.request_id = ""
        self.trace: trace.Trace | None = None
        self.caller = NOBODY  # until identified
        self.user: str | None = None
        self.cache: str | None = None
        self.status = 0
        self.streamed = False  # the body is a stream: counted when it ends, not here


class Step:
    """One step of every request; a step overrides the phases it takes part in."""

    def begin(self, ex: Exchange) -> None:
        """Before the answer."""

    def headers(self, ex: Exchange, out: Headers) -> None:
        """Add this step's headers to the response's."""

    def end(self, ex: Exchange) -> None:
        """After the answer went out."""

    def done(self, ex: Exchange) -> None:
        """After a streamed body ended (ex.status: what the stream stands for)."""


class RequestId(Step):
    """The caller's X-Request-ID when it is safe, else a fresh one."""

    def begin(self, ex: Exchange) -> None:
        """The request's id."""
        ex.request_id = access.request_id(ex.environ.get("HTTP_X_REQUEST_ID"))


class Tracing(Step):
    """W3C Trace Context: continue the caller's trace or start one; current while answering."""

    def begin(self, ex: Exchange) -> None:
        """The request's span, made current."""
        ex.trace = trace.begin(ex.environ.get("HTTP_TRACEPARENT"))

    def end(self, ex: Exchange) -> None:
        """Later log lines of this greenlet belong to no trace (a stream re-enters it)."""
        trace.end()


class Identify(Step):
    """Who asks: a caller whose credential failed carries its problem, raised by the route
    that needs it (a probe or /metrics does not)."""

    def __init__(self, auth: Authenticator) -> None:
        self.auth = auth

    def begin(self, ex: Exchange) -> None:
        """The request's caller."""
        authorization = ex.environ.get("HTTP_AUTHORIZATION")
        presented(authorization)  # redacted from every log line from now on
        ex.caller = self.auth.identify(authorization)


class CorsHeaders(Step):
    """The CORS headers for the request's Origin (and, for a preflight, what it may send)."""

    def __init__(self, cors: Cors) -> None:
        self.cors = cors

    def headers(self, ex: Exchange, out: Headers) -> None:
        """Nothing unless origins are configured."""
        if not self.cors.enabled:
            return
        environ = ex.environ
        asked = environ.get("HTTP_ACCESS_CONTROL_REQUEST_METHOD")
        preflight = ex.method == "OPTIONS" and asked is not None
        out += self.cors.headers(
            environ.get("HTTP_ORIGIN"),
            preflight,
            environ.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS"),
            asked,
        )


class CommonHeaders(Step):
    """X-Request-ID, nosniff and the service's traceparent, on every response."""

    def headers(self, ex: Exchange, out: Headers) -> None:
        """The common headers."""
        out += access.common_headers(ex.request_id, ex.trace)


class AccessLog(Step):
    """One access line per request the app answered, with the upstream calls made for it."""

    def begin(self, ex: Exchange) -> None:
        """A tally of the request's upstream calls (a greenlet answers one request at a time)."""
        access.TALLY.set(access.UpstreamTally())

    def end(self, ex: Exchange) -> None:
        """The line (a refusal has gunicorn's warning instead)."""
        upstream = access.TALLY.get()
        access.TALLY.set(None)  # a stream's later calls write lines of their own
        if ex.path is None:
            return
        client = ex.caller.client
        access.log_access(
            ex.method,
            ex.path,
            ex.status,
            ex.request_id,
            ex.started,
            user=ex.user,
            client=client.name if client else None,
            cache=ex.cache,
            remote_addr=ex.environ.get("REMOTE_ADDR"),
            upstream=upstream,
        )


class Counted(Step):
    """The request in music_facade_requests_total and its duration, by route template."""

    def __init__(self, measures: metrics.Metrics) -> None:
        self.metrics = measures

    def end(self, ex: Exchange) -> None:
        """Counted now, unless it has no route or is a stream (counted when it is done)."""
        if not ex.streamed:
            self.done(ex)

    def done(self, ex: Exchange) -> None:
        """Counted with the status and duration it ended with."""
        if ex.route is None:
            return
        client = ex.caller.client
        self.metrics.request(
            ex.route,
            ex.method,
            ex.status,
            metrics.client_label(client.name if client else None),
            time.monotonic() - ex.started,
        )


def steps(auth: Authenticator, cors: Cors, measures: metrics.Metrics) -> list[Step]:
    """Every request's steps, in order (end runs them last to first)."""
    return [
        RequestId(),
        Tracing(),
        Identify(auth),
        CorsHeaders(cors),
        CommonHeaders(),
        Counted(measures),
        AccessLog(),
    ]


def _overrides(step: Step, phase: str) -> bool:
    return getattr(type(step), phase) is not getattr(Step, phase)


class Pipeline:
    """The steps' phases as bound methods, each only where a step takes part (the hit path
    calls nothing it does not need)."""

    def __init__(self, steps: list[Step]) -> None:
        self.steps = tuple(steps)
        self._begin = tuple(s.begin for s in steps if _overrides(s, "begin"))
        self._headers = tuple(s.headers for s in steps if _overrides(s, "headers"))
        self._end = tuple(s.end for s in reversed(steps) if _overrides(s, "end"))
        self._done = tuple(s.done for s in reversed(steps) if _overrides(s, "done"))

    def begin(self, ex: Exchange) -> None:
        """Before the answer; a step may raise a Problem, answered by the entrance."""
        for begin in self._begin:
            begin(ex)

    def headers(self, ex: Exchange, out: Headers) -> Headers:
        """out, with every step's headers added."""
        for add in self._headers:
            add(ex, out)
        return out

    def end(self, ex: Exchange) -> None:
        """After the answer went out, last step to first."""
        for end in self._end:
            end(ex)

    def done(self, ex: Exchange) -> None:
        """After a streamed body ended, last step to first."""
        for done in self._done:
            done(ex)

    def refusal_headers(self, origin: str | None, method: str | None) -> Headers:
        """The headers of an answer gunicorn's worker writes itself (the app never saw the
        request): a fresh request id and trace, CORS for what Origin could be found."""
        environ = {"HTTP_ORIGIN": origin} if origin else {}
        ex = Exchange(environ, method or "", None, None)
        self.begin(ex)
        out = self.headers(ex, [])
        self.end(ex)
        return out


def install(app: Flask, pipeline: Pipeline) -> None:
    """Run the pipeline around every request Flask answers: its before hook first of all,
    its after hook last of all (install it before anything else registers hooks)."""
    app.extensions["pipeline"] = pipeline
    app.before_request(_begin)
    app.after_request(_finish)
    app.teardown_request(_end_trace)


def _begin() -> None:
    pipeline: Pipeline = current_app.extensions["pipeline"]
    # The route is named once the answer is known (a 405 has none matched).
    ex = g.exchange = Exchange(request.environ, request.method, request.path, None)
    try:
        pipeline.begin(ex)
    finally:
        # Flask's error handlers and views read these (a failed identify is answered too).
        g.request_id = ex.request_id
        g.caller = ex.caller


def _finish(resp: Response) -> Response:
    ex: Exchange | None = g.get("exchange")
    if ex is None:  # a hook before ours failed: the pipeline has nothing to finish
        return resp
    pipeline: Pipeline = current_app.extensions["pipeline"]
    ex.status = resp.status_code
    ex.route = _route(ex.status)
    ex.user = g.get("user")
    ex.cache = resp.headers.get("Cache-Status")
    for name, value in pipeline.headers(ex, []):
        if name == "Vary":
            resp.vary.add(value)
        else:
            resp.headers[name] = value
    pipeline.end(ex)
    return resp


def _route(status: int) -> str:
    """The matched rule's template (never the path a caller sent), also for a 405 on a known
    path."""
    if request.url_rule is not None:
        return metrics.template(request.url_rule.rule)
    if status == 405:  # the path has a rule, not for this method
        return metrics.route_of(current_app.url_map, request.path)
    return metrics.UNMATCHED


def _end_trace(exc: BaseException | None) -> None:
    # The after hook ends it; this is for an answer that failed before reaching it.
    trace.end()
