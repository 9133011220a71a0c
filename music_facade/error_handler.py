"""One handler: whatever a request raises is answered as application/problem+json.

Flask's error handlers turn a Problem, werkzeug's HTTPException and anything unexpected into a
problem document from the catalogue (music_facade.core.problems); LastResort, outermost in the WSGI
stack, does the same for what escapes them.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flask import Flask, Response, g
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from . import access
from .core.problems import INTERNAL_DETAIL, PROBLEMS, ProblemType
from .errors import Problem, problem_parts
from .pipeline import Exchange, Pipeline

log = logging.getLogger(__name__)


def _http_code(exc: HTTPException) -> str:
    """werkzeug's 'Method Not Allowed' → 'method_not_allowed'."""
    name = exc.name or "error"
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def problem_response(
    problem: ProblemType,
    detail: str,
    headers: Mapping[str, str] | None = None,
    members: Mapping[str, Any] | None = None,
) -> Response:
    """A Flask response carrying a problem with the request id and its headers."""
    body, all_headers = problem_parts(problem, detail, g.get("request_id"), headers, members)
    resp = Response(body, status=problem.status)
    resp.headers.update(all_headers)
    return resp


def _handle_problem(exc: Problem) -> Response:
    return problem_response(exc.kind, exc.detail, exc.headers, exc.members())


def _handle_http(exc: HTTPException) -> Response:
    status = exc.code or 500
    problem = PROBLEMS.get(_http_code(exc))
    if problem is None or not problem.generic or problem.status != status:
        # Every code the service answers is catalogued: an HTTP error with none is a failure.
        log.error("HTTP %s raised with no catalogued problem", status, exc_info=exc)
        return _handle_problem(Problem(INTERNAL_DETAIL))
    if status >= 500:
        log.error("HTTP %s raised inside the service", status, exc_info=exc)
    headers = {}
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        headers["Allow"] = ", ".join(sorted(exc.valid_methods))
    return problem_response(problem, exc.description or problem.title, headers)


def _handle_unexpected(exc: Exception) -> Response:
    log.error("unexpected error", exc_info=exc)
    return _handle_problem(Problem(INTERNAL_DETAIL))


def register(app: Flask) -> None:
    """Route every error raised in a request to a problem+json answer."""
    app.register_error_handler(Problem, _handle_problem)
    app.register_error_handler(HTTPException, _handle_http)
    app.register_error_handler(Exception, _handle_unexpected)


class LastResort:
    """WSGI, outermost: an exception that escaped every handler is a counted problem+json 500.

    The handlers answer their own errors (Flask's error handlers, MusicHandler's); this is for
    whatever fails around them, so that gunicorn never answers a bare 500 that /metrics does
    not count. The answer goes through the request pipeline like any other (request id, trace,
    CORS, common headers, access line, metrics), with route_of naming its route; should a step
    itself be what failed, the answer still goes out with what could be made.
    """

    def __init__(
        self,
        app: Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]],
        every_request: Pipeline,
        route_of: Callable[[str], str],
    ) -> None:
        self.app = app
        self.pipeline = every_request
        self.route_of = route_of

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        try:
            return self.app(environ, start_response)
        except Exception as exc:
            log.error("unexpected error outside every handler", exc_info=exc)
            path = environ.get("PATH_INFO") or ""
            ex = Exchange(environ, environ.get("REQUEST_METHOD") or "", path, self.route_of(path))
            ex.status = 500
            try:
                self.pipeline.begin(ex)
            except Exception as again:
                log.error("a request step failed while answering a 500", exc_info=again)
            ex.request_id = ex.request_id or access.request_id(None)
            body, headers = Problem(INTERNAL_DETAIL).parts(ex.request_id)
            headers.append(("Content-Length", str(len(body))))
            try:
                headers = self.pipeline.headers(ex, headers)
            except Exception as again:
                log.error("a request step failed while answering a 500", exc_info=again)
                headers += access.common_headers(ex.request_id, None)
            # exc_info: if the response had already started, the server re-raises and drops
            # the connection (the status cannot change any more).
            start_response("500 Internal Server Error", headers, sys.exc_info())
            try:
                self.pipeline.end(ex)
            except Exception as again:
                log.error("a request step failed while answering a 500", exc_info=again)
            return [body]
