"""gunicorn's gevent worker, answering requests gunicorn itself refuses with problem+json.

Why gevent: the service is an I/O-bound proxy. A greenlet per connection costs a few KB, so a
worker holds thousands of connections, idle, slow or waiting on the upstream, while a request
for a cached page (or /healthz) still runs at once; with a thread per request it queued behind
them. `gevent.monkey.patch_all()` (in `init_process`, before the app is imported) makes
`socket`, `ssl`, `threading` (the cache's locks and futures, the bulkhead's semaphore) and
`time.sleep` cooperative.

gunicorn rejects some requests before the app sees them (request line too long, too many or too
large headers, a bad method token or HTTP version, malformed headers or chunked bodies …) and
answers them from `Worker.handle_error` with its own `text/html` page that quotes the offending
bytes. `ProblemWorker` answers the same cases as RFC 9457 `application/problem+json`, like every
other error of the service, with a fixed `detail` (never the request's bytes: they may carry
secrets), a fresh request id, and `Connection: close`.

Use it with `worker_class = "music_facade.worker.ProblemWorker"` (music_facade.gunicorn_conf).
gunicorn's master imports this module (and the gunicorn settings import music_facade.config):
neither may import requests or anything else that binds `ssl`/`socket` names before the worker
patches them, which is why `music_facade/__init__.py` imports the app lazily; `init_process` logs
an error naming any module that did.
"""

from __future__ import annotations

import logging
import socket
import ssl
import sys
import uuid
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from gunicorn import glogging, util
from gunicorn.http.body import LengthReader
from gunicorn.http.errors import (
    ChunkMissingTerminator,
    ExpectationFailed,
    ForbiddenProxyRequest,
    InvalidChunkExtension,
    InvalidChunkSize,
    InvalidH2CPreface,
    InvalidHeader,
    InvalidHeaderName,
    InvalidHTTPVersion,
    InvalidProxyHeader,
    InvalidProxyLine,
    InvalidRequestLine,
    InvalidRequestMethod,
    InvalidResponseHeader,
    InvalidResponseHeaderName,
    InvalidSchemeHeaders,
    LimitRequestHeaders,
    LimitRequestLine,
    ObsoleteFolding,
    UnsupportedTransferCoding,
)
from gunicorn.http.parser import RequestParser
from gunicorn.workers.ggevent import GeventWorker

from .core.problems import (
    INTERNAL_DETAIL,
    INTERNAL_ERROR,
    MEDIA_TYPE,
    PROBLEMS,
    ProblemType,
    render,
)
from .refusals import HeadKeepingRequest, origin_of

# The request was answered by the app; set on gunicorn's request object by handle_request.
_ANSWERED = "_music_facade_answered"


@dataclass(frozen=True)
class Rejection:
    """How one kind of gunicorn parse error is answered: its problem, and a fixed detail."""

    problem: ProblemType
    detail: str


ExceptionClasses = type[BaseException] | tuple[type[BaseException], ...]


def _bad_request(detail: str) -> Rejection:
    return Rejection(PROBLEMS["bad_request"], detail)


# gunicorn's client errors (the classes workers/base.py Worker.handle_error lists, plus
# InvalidProxyHeader, which it forgets), first match wins. Its ConfigurationProblem (a request
# path outside SCRIPT_NAME) is the operator's fault and answered like any other failure: 500.
CLIENT_ERRORS: tuple[tuple[ExceptionClasses, Rejection], ...] = (
    (
        LimitRequestLine,
        Rejection(PROBLEMS["uri_too_long"], "The request line is too long."),
    ),
    (
        LimitRequestHeaders,
        Rejection(
            PROBLEMS["request_header_fields_too_large"],
            "The request has too many header fields, or one that is too large.",
        ),
    ),
    (
        UnsupportedTransferCoding,
        Rejection(PROBLEMS["not_implemented"], "The request's Transfer-Encoding is not supported."),
    ),
    (
        ExpectationFailed,
        Rejection(
            PROBLEMS["expectation_failed"],
            "The request's Expect header cannot be met; only 100-continue is supported.",
        ),
    ),
    (
        ForbiddenProxyRequest,
        Rejection(PROBLEMS["forbidden"], "PROXY protocol headers are not accepted from here."),
    ),
    (InvalidRequestLine, _bad_request("The request line is malformed.")),
    (InvalidRequestMethod, _bad_request("The request method is not a valid method token.")),
    (InvalidHTTPVersion, _bad_request("The HTTP version is not supported; use HTTP/1.x.")),
    (InvalidHeaderName, _bad_request("A request header field name is malformed.")),
    (ObsoleteFolding, _bad_request("A request header field uses obsolete line folding.")),
    (InvalidHeader, _bad_request("A request header field is malformed or not allowed.")),
    (InvalidSchemeHeaders, _bad_request("The request's scheme headers contradict each other.")),
    (
        (InvalidChunkSize, ChunkMissingTerminator, InvalidChunkExtension),
        _bad_request("The request's chunked body is malformed."),
    ),
    (
        (InvalidProxyLine, InvalidProxyHeader),
        _bad_request("The PROXY protocol header is malformed."),
    ),
    (InvalidH2CPreface, _bad_request("The connection did not start with the HTTP/2 preface.")),
    (ssl.SSLError, _bad_request("The TLS handshake failed.")),
)

# Errors in the app's own response headers subclass InvalidHeader(Name) but are not the client's.
SERVER_ERRORS = (InvalidResponseHeader, InvalidResponseHeaderName)

# The kernel's send buffer per client connection (it doubles the value). Left to autotuning it
# grows to megabytes, so a client that pipelines requests and never reads has the worker spend
# its CPU rendering and writing responses nobody takes; capped, that greenlet blocks after a
# couple of responses and costs nothing more. Enough for /music's pages and the OpenAPI document.
SEND_BUFFER_BYTES = 16 * 1024


def rejection_for(exc: BaseException) -> Rejection | None:
    """How a client error is answered; None for anything else (a failure of the service)."""
    if isinstance(exc, SERVER_ERRORS):
        return None
    for classes, rejection in CLIENT_ERRORS:
        if isinstance(exc, classes):
            return rejection
    return None


def problem_bytes(
    problem: ProblemType,
    detail: str,
    request_id: str,
    head: bool,
    headers: list[tuple[str, str]],
) -> bytes:
    """A whole HTTP/1.1 response carrying a problem; no body when head is true.

    headers: the request pipeline's (music_facade.pipeline: X-Request-ID, CORS, …)."""
    body = render(problem, detail, request_id)
    # A generic problem's title is the RFC 9110 reason phrase (Python's differ for some).
    reason = problem.title if problem.generic else HTTPStatus(problem.status).phrase
    lines = [
        f"HTTP/1.1 {problem.status} {reason}",
        f"Date: {util.http_date()}",
        f"Content-Type: {MEDIA_TYPE}",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        "Connection: close",
        *(f"{name}: {value}" for name, value in headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + (b"" if head else body)


def unpatchable_modules() -> list[str]:
    """Modules that hold the original `ssl.SSLContext` or `socket.socket` under another name.

    Such a module, imported before monkey-patching (in gunicorn's master, say), keeps blocking
    sockets that would stall every greenlet of the worker; urllib3 does so at import.
    """
    originals = {id(ssl.SSLContext), id(socket.socket)}
    found = []
    for name, module in list(sys.modules.items()):
        if name in ("ssl", "socket", "_ssl", "_socket") or module is None:
            continue
        try:
            values = list(vars(module).values())
        except TypeError:
            continue
        if any(id(v) in originals for v in values):
            found.append(name)
    return sorted(found)


class AccessQuietLogger(glogging.Logger):  # type: ignore[misc]
    """gunicorn's logger, minus the access line nobody reads.

    The app logs its own access line (music_facade.access) and deploy/gunicorn.conf.py sets
    gunicorn.access to WARNING, yet gunicorn builds its INFO line's fields for every request
    anyway (about a tenth of a cached page's cost). Use with `logger_class`.
    """

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        """gunicorn's access line, when its logger would write it."""
        if self.access_log.isEnabledFor(logging.INFO):
            super().access(resp, req, environ, request_time)


def _drained(body: Any) -> bool:
    """Whether a request body is known to have nothing left (most requests: no body at all)."""
    reader = body.reader
    return isinstance(reader, LengthReader) and reader.length == 0 and not body.buf.tell()


class ProblemWorker(GeventWorker):  # type: ignore[misc]
    """gunicorn's gevent worker whose own error answers are problem+json, not HTML."""

    def init_process(self) -> None:
        """Check that nothing captured blocking sockets before gevent patches, then run."""
        early = [m for m in unpatchable_modules() if not m.startswith(("gunicorn.", "gevent"))]
        if early:
            # Loud, not fatal: the service works, but those modules' sockets block the worker.
            self.log.error("imported before gevent patched ssl/socket: %s", ", ".join(early))
        # Refused requests keep their bytes, so their answers can carry CORS headers.
        RequestParser.mesg_class = HeadKeepingRequest
        super().init_process()

    def handle_exit(self, sig: int, frame: Any) -> None:
        """SIGTERM: /readyz fails from now on (Lifecycle), then gunicorn's graceful stop, which
        finishes the requests in flight within graceful_timeout."""
        # A SIGTERM can arrive while the worker still boots, before the app (self.wsgi) is
        # loaded: the worker must then just stop, not fail to boot (which halts the master).
        app = getattr(self, "wsgi", None)
        lifecycle = getattr(app, "extensions", {}).get("lifecycle")
        if lifecycle is not None:
            lifecycle.begin_shutdown()
        super().handle_exit(sig, frame)

    def handle(self, listener: Any, client: socket.socket, addr: Any) -> None:
        """Serve one connection, with a bounded send buffer (SEND_BUFFER_BYTES)."""
        if client.family in (socket.AF_INET, socket.AF_INET6):
            client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        super().handle(listener, client, addr)

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> Any:
        """Serve one request through the app, mark it answered, then discard its unread body.

        gunicorn would discard the body while parsing the next request, where a malformed
        body could no longer be told from a malformed next request; here it still can.
        """
        try:
            keepalive = super().handle_request(listener_name, req, sock, addr)
        except TimeoutError:
            # A write past a streamed answer's send timeout (music_facade/streaming.py): the caller
            # stopped reading. Its connection is dropped; not a failure of the service.
            self.log.warning("dropped a connection whose caller stopped reading")
            raise StopIteration from None
        setattr(req, _ANSWERED, True)
        body = getattr(req, "body", None)
        if body is not None and not _drained(body):
            try:
                with self.timeout_ctx():  # no longer than an idle keep-alive connection
                    while body.read(8192):
                        pass
            except Exception as exc:  # gunicorn sees body.failed and closes the connection
                self.handle_error(req, sock, addr, exc)
        return keepalive

    def handle_error(self, req: Any, client: socket.socket, addr: Any, exc: BaseException) -> None:
        """Log the error and answer it with a problem document; gunicorn then closes."""
        ip = addr[0] if isinstance(addr, tuple) and addr else "a unix socket"
        # gunicorn can fail after the app's response was sent (draining a malformed chunked body
        # the app did not read): a second response would answer the caller's next request on
        # this connection, so then it is only logged. gunicorn closes the connection either way.
        answered = getattr(req, _ANSWERED, False)
        head = getattr(req or getattr(exc, "req", None), "method", None)
        headers = [] if answered else self._refusal_headers(exc, client, head)
        request_id = next((v for n, v in headers if n == "X-Request-ID"), uuid.uuid4().hex)
        extra = {} if answered else {"request_id": request_id}
        after = " (after the response)" if answered else ""
        rejection = rejection_for(exc)
        if rejection is not None:
            # The class name only: gunicorn's messages quote the request's bytes.
            self.log.warning(
                "invalid request from %s: %s%s", ip, type(exc).__name__, after, extra=extra
            )
            problem, detail = rejection.problem, rejection.detail
        else:
            self.log.exception(
                "error handling request from %s%s", ip, after, exc_info=exc, extra=extra
            )
            problem, detail = INTERNAL_ERROR, INTERNAL_DETAIL
        if answered:
            return
        try:
            answer = problem_bytes(problem, detail, request_id, head == "HEAD", headers)
            util.write_nonblock(client, answer)
        except Exception:  # the client is gone: nothing to answer
            self.log.debug("Failed to send error message.")

    def _refusal_headers(
        self, exc: BaseException, client: socket.socket, method: str | None
    ) -> list[tuple[str, str]]:
        """The app's request pipeline's headers for a refusal: request id, trace, CORS, …"""
        extensions = getattr(self.wsgi, "extensions", {})
        pipeline = extensions.get("pipeline")
        if pipeline is None:  # not the service's app: an id, at least
            return [("X-Request-ID", uuid.uuid4().hex)]
        cors = extensions.get("cors")
        # Finding the Origin may read more of the request: only when CORS would use it.
        origin = origin_of(exc, client) if cors is not None and cors.enabled else None
        headers: list[tuple[str, str]] = pipeline.refusal_headers(origin, method)
        return headers
