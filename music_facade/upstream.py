"""UpstreamClient: the one way to call useapi.net: guards, retries, one deadline, decoding, caps.

Every call goes through the same steps, whatever the endpoint: the account's guards (cooldown,
remembered auth failure, circuit breaker), one deadline for the whole exchange (watchdog.py),
retries of connection errors and 502/503/504 in the client's own loop, a body decoded as a stream
(gzip, deflate) and capped both on the wire and decoded, and one mapping of outcomes to problems.
"""

from __future__ import annotations

import http.client
import logging
import random
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import urllib3
import urllib3.exceptions
from urllib3.response import BaseHTTPResponse

from . import access, jsoncodec, logs, trace
from .config import UpstreamSettings
from .core.tracks import LONE_SURROGATE_RE
from .errors import (
    GuardRefusal,
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamFailure,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from .guards import Guards
from .watchdog import POOL_CLASSES, Exchange, Watchdog

if TYPE_CHECKING:
    from .metrics import Metrics

log = logging.getLogger(__name__)
# One line per upstream call, made as cheaply as the access line (music_facade.logs.LineRecords).
ANSWERED_LINES = logs.LineRecords(log, "upstream answered", __file__, "_exchange")

DEFAULT_RETRY_AFTER = 10
MAX_RETRY_AFTER = 3600
# Statuses that mean the service's own token or account is wrong (596: useapi.net could not
# refresh the account's session), never the caller's fault.
AUTH_STATUSES = frozenset({401, 402, 403, 596})
RETRY_STATUSES = frozenset({502, 503, 504})
# Only what urllib3 decodes without optional packages; br/zstd would need brotli/zstandard.
ACCEPT_ENCODING = "gzip, deflate"
DECODABLE = frozenset({"gzip", "x-gzip", "deflate", "identity"})
_TOKEN_RE = re.compile(r"\A[A-Za-z0-9._+-]{1,32}\Z")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]+")
_JOB_ID_RE = re.compile(r"user:\S*")
_READ_CHUNK = 64 * 1024
TIMEOUT_DETAIL = "The upstream did not answer in time."
USER_AGENT = "music-facade"


@dataclass(frozen=True)
class UpstreamAnswer:
    """A 200 JSON object from the upstream, with what the exchange cost."""

    doc: dict[str, Any]
    status: int
    content_encoding: str
    wire_bytes: int
    decoded_bytes: int
    seconds: float


class UpstreamClient:
    """Calls useapi.net; raises an UpstreamFailure for every outcome but a 200 JSON object."""

    def __init__(
        self,
        settings: UpstreamSettings,
        pool_size: int = 10,
        *,
        guards: Guards | None = None,
        metrics: Metrics | None = None,
        source: str = "request",
    ) -> None:
        """metrics is told of every call's outcome (labelled with source: who it is made
        for) and every guard refusal."""
        self.settings = settings
        self.source = source
        self.guards = guards if guards is not None else Guards(settings)
        self.metrics = metrics
        self.watchdog = Watchdog()
        # urllib3 itself, not requests over it: a call costs half as much, and nothing here
        # needs what requests adds. It keeps no cookies (one caller's upstream cookies must never
        # ride along on another's call), reads no .netrc or proxy variables that could replace
        # the token, and follows no redirect. Retries are _send's, not urllib3's Retry, which
        # reads a retried 5xx answer's whole body to reuse the connection.
        self.pool = urllib3.PoolManager(num_pools=4, maxsize=pool_size, retries=False)
        self.pool.pool_classes_by_scheme = POOL_CLASSES  # connections report to the watchdog
        # Every call goes to base_url's host: its connection pool is taken once, not looked up
        # (URL parsed, pool key normalised) on every call as PoolManager.request does.
        self._host = self.pool.connection_from_url(settings.base_url)
        self._path = urllib3.util.parse_url(settings.base_url).path or ""
        self._headers = {
            "Authorization": f"Bearer {settings.token.reveal()}",
            "Accept": "application/json",
            "Accept-Encoding": ACCEPT_ENCODING,
            "User-Agent": USER_AGENT,
        }

    def close(self) -> None:
        """Release pooled connections and the watchdog."""
        self.pool.clear()
        self.watchdog.stop()

    def list_music(
        self, user_id: str, type_: str, cursor: str | None, request_id: str
    ) -> dict[str, Any]:
        """GET /music/ for one page and return its JSON object, unvalidated beyond that."""
        return self.fetch_page(user_id, type_, cursor, request_id).doc

    def fetch_page(
        self, user_id: str, type_: str, cursor: str | None, request_id: str
    ) -> UpstreamAnswer:
        """GET /music/ for one page, with what the exchange cost (for the probe)."""
        params = {"user_id": user_id, "type": type_}
        if cursor is not None:
            params["cursor"] = cursor
        return self.get_json(user_id, "/music/", params, request_id)

    def get_record(self, user_id: str, job_id: str, request_id: str) -> dict[str, Any]:
        """GET /music/{job_id}: one record's JSON object (404 → UpstreamError, status 404)."""
        return self.get_json(user_id, "/music/" + _job_path(job_id), {}, request_id).doc

    def get_download(
        self, user_id: str, job_id: str, file_format: str, request_id: str
    ) -> dict[str, Any]:
        """GET /music/download/{job_id}: {"url", "remainSeconds"} for a completed job."""
        path = "/music/download/" + _job_path(job_id)
        return self.get_json(user_id, path, {"file_format": file_format}, request_id).doc

    def get_json(
        self, user_id: str, path: str, params: dict[str, str], request_id: str
    ) -> UpstreamAnswer:
        """GET base_url + path on behalf of account user_id, through the account's guards."""
        metrics = self.metrics
        try:
            self.guards.admit(user_id)  # raises the refusal without any upstream call
        except UpstreamFailure as exc:
            if metrics is not None and isinstance(exc, GuardRefusal):
                metrics.upstream_refused(user_id, exc)
            raise
        started = time.monotonic()
        try:
            answer = self._exchange(path, params, request_id, user_id)
        except UpstreamFailure as exc:
            seconds = _tallied(started)
            if metrics is not None:
                metrics.upstream_call(user_id, exc.code, seconds, self.source)
            self.guards.failed(user_id, exc)
            raise
        seconds = _tallied(started)
        if metrics is not None:
            metrics.upstream_call(user_id, "ok", seconds, self.source)
        self.guards.succeeded(user_id)
        return answer

    def _exchange(
        self, path: str, params: dict[str, str], request_id: str, user_id: str
    ) -> UpstreamAnswer:
        started = time.monotonic()
        with self.watchdog.exchange(self.settings.exchange_deadline) as ex:
            try:
                resp = self._send(self._path + path, params, request_id, ex)
                try:
                    encoding = _content_encoding(resp)
                    body, wire = self._read_body(resp, ex, encoding == "identity")
                except BaseException:
                    resp.close()  # a half-read answer's connection cannot be reused: drop it
                    raise
                finally:
                    resp.release_conn()  # fully read: back to the pool, kept alive
                if ex.expired:
                    # Cut at the deadline, http.client may take the EOF for the end of the
                    # headers or of the body: whatever arrived is not the answer.
                    raise UpstreamTimeout(TIMEOUT_DETAIL)
            except UpstreamFailure:
                if ex.expired:
                    raise UpstreamTimeout(TIMEOUT_DETAIL) from None
                raise
        seconds = time.monotonic() - started
        tally = access.TALLY.get()
        if tally is not None:
            tally.status = resp.status
        # A request's calls are on its access line; a line each only outside one, or at DEBUG.
        ANSWERED_LINES.emit(
            logging.INFO if tally is None else logging.DEBUG,
            None,
            {
                "upstream_status": resp.status,
                "upstream_ms": round(seconds * 1000, 1),
                "upstream_bytes": wire,
                "upstream_decoded_bytes": len(body),
                "upstream_encoding": encoding,
            },
        )
        if resp.status != 200:
            raise self._failure(resp, body, user_id)
        doc = _parse_page(body)
        if "error" in doc and "records" not in doc:
            # A 200 that carries an error is a failure: it must never become a cached page.
            message = self._upstream_message(doc, user_id) or "no message"
            log.warning("upstream answered 200 with an error body")
            raise UpstreamError(
                f"The upstream answered 200 with an error: {message}",
                upstream_status=200,
                outage=True,
            )
        return UpstreamAnswer(doc, resp.status, encoding, wire, len(body), seconds)

    def _send(
        self, path: str, params: dict[str, str], request_id: str, ex: Exchange
    ) -> BaseHTTPResponse:
        """The upstream's answer (body unread), retrying connection errors and 502/503/504."""
        target = f"{path}?{urlencode(params)}" if params else path
        headers = {**self._headers, "X-Request-ID": request_id}
        retries = self.settings.retries
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(max(0.0, min(backoff_seconds(attempt), ex.remaining())))
            left = ex.remaining()
            if left <= 0:
                raise UpstreamTimeout(TIMEOUT_DETAIL)
            try:
                resp = self._host.urlopen(
                    "GET",
                    target,
                    # Each attempt a child span of the request's (a new trace outside one).
                    headers={**headers, "traceparent": trace.outgoing()},
                    timeout=urllib3.Timeout(
                        connect=min(self.settings.connect_timeout, left),
                        read=min(self.settings.read_timeout, left),
                    ),
                    preload_content=False,
                    redirect=False,
                    retries=False,
                    assert_same_host=False,
                )
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                if ex.expired:
                    raise UpstreamTimeout(TIMEOUT_DETAIL) from None
                malformed = _malformed_answer(exc)
                if malformed is not None:
                    # The upstream answered, but not in HTTP we accept (a 70 KB header line,
                    # too many headers): asking again would get the same.
                    log.warning("upstream answer malformed: %s", type(malformed).__name__)
                    raise UpstreamError(
                        "The upstream's answer had malformed or oversized headers."
                    ) from None
                if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
                    # Never retried: it already cost read_timeout seconds.
                    raise UpstreamTimeout(TIMEOUT_DETAIL) from None
                if attempt < retries:
                    continue  # no connection, or it broke before an answer: try again
                # NewConnectionError subclasses ConnectTimeoutError in urllib3: a refused or
                # unresolvable connection is unreachable, not slow.
                if isinstance(exc, urllib3.exceptions.TimeoutError) and not isinstance(
                    exc, urllib3.exceptions.NewConnectionError
                ):
                    raise UpstreamTimeout(TIMEOUT_DETAIL) from None
                log.warning("upstream unreachable: %s", type(exc).__name__)
                raise UpstreamUnreachable("The upstream could not be reached.") from None
            if resp.status in RETRY_STATUSES and attempt < retries:
                resp.close()  # drop the connection rather than read a body we will not use
                resp.release_conn()
                continue
            return resp
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _read_body(self, resp: BaseHTTPResponse, ex: Exchange, identity: bool) -> tuple[bytes, int]:
        """The decoded body and its size on the wire, refused past max_body_bytes (either)."""
        cap = self.settings.max_body_bytes
        too_large = f"The upstream's answer is larger than {cap} bytes."
        declared = resp.headers.get("Content-Length", "")
        length = int(declared) if declared.isdigit() else None
        if length is not None and length > cap:
            raise UpstreamError(too_large, upstream_status=resp.status)
        try:
            if identity and length is not None:
                # Its size is known and within the cap: one read takes exactly that many bytes
                # (the watchdog still bounds its time), without the loop's per-chunk work.
                body = resp.read(decode_content=True)
                if ex.expired:
                    raise UpstreamTimeout(TIMEOUT_DETAIL)
                if len(body) != length:
                    raise EOFError  # cut off: answered below, as any broken body
                return body, length
            # decode_content: urllib3 (>= 2.7) inflates at most about one chunk per read, so
            # a small compressed body cannot balloon past the cap in memory.
            buf = bytearray()
            while chunk := resp.read(_READ_CHUNK, decode_content=True):
                buf += chunk
                if len(buf) > cap or resp.tell() > cap:
                    raise UpstreamError(too_large, upstream_status=resp.status)
                if ex.remaining() <= 0:
                    raise UpstreamTimeout("The upstream's answer did not arrive in time.")
                if identity and resp.tell() == length:
                    break  # all of it: no read just to learn that nothing follows
        except urllib3.exceptions.ReadTimeoutError:
            raise UpstreamTimeout("The upstream's answer did not arrive in time.") from None
        except (urllib3.exceptions.HTTPError, OSError, EOFError, ValueError) as exc:
            if ex.expired:
                raise UpstreamTimeout(TIMEOUT_DETAIL) from None
            log.warning("upstream body broken: %s", type(exc).__name__)
            raise UpstreamError(
                "The upstream's answer was cut off or undecodable.",
                upstream_status=resp.status,
            ) from None
        return bytes(buf), resp.tell()

    def _failure(self, resp: BaseHTTPResponse, body: bytes, user_id: str) -> UpstreamFailure:
        status = resp.status
        if status == 400:
            message = self._upstream_message(_json_or_none(body), user_id)
            return UpstreamRejected(
                f"The upstream rejected the request: {message}"
                if message
                else "The upstream rejected the request.",
                upstream_status=status,
            )
        if status in AUTH_STATUSES:
            log.error("upstream refused the service's credentials: status %s", status)
            return UpstreamAuthFailed(
                f"The upstream refused the service's own credentials (status {status}). "
                "Operators: check the useapi.net token (USEAPI_TOKEN / USEAPI_TOKEN_FILE), "
                "the subscription, and that the TemPolor account is configured at useapi.net.",
                upstream_status=status,
            )
        if status == 429:
            seconds = retry_after_seconds(
                resp.headers.get("Retry-After"), cap=self.settings.max_cooldown
            )
            return UpstreamRateLimited(
                "The upstream is rate limiting the service; retry later.",
                headers={"Retry-After": str(seconds)},
                upstream_status=status,
            )
        if 300 <= status < 400:
            log.warning("upstream redirected: status %s", status)
            return UpstreamError(
                f"The upstream redirected (status {status}); redirects are never followed, "
                "so the token cannot travel to another host. Operators: check "
                "[upstream] base_url.",
                upstream_status=status,
            )
        log.warning("upstream error status %s", status)
        return UpstreamError(
            f"The upstream answered with status {status}.",
            upstream_status=status,
            outage=status >= 500,
        )

    def _upstream_message(self, doc: Any, user_id: str) -> str | None:
        """The upstream's 'error' text, made safe to show: no ids, no token, no control bytes."""
        message = doc.get("error") if isinstance(doc, dict) else None
        if not isinstance(message, str) or not message.strip():
            return None
        message = message.replace(self.settings.token.reveal(), "********")
        message = _JOB_ID_RE.sub("<job>", message)  # names the useapi.net account
        message = message.replace(user_id, "<user>")
        message = _CONTROL_RE.sub(" ", message).strip()
        message = LONE_SURROGATE_RE.sub("\ufffd", message)
        return message[:300]


def _job_path(job_id: str) -> str:
    """A job_id as a path segment: as the upstream's examples send it, colons included."""
    return quote(job_id, safe=":")


def _content_encoding(resp: BaseHTTPResponse) -> str:
    """The answer's Content-Encoding ("identity" if none); UpstreamError if not decodable."""
    value = resp.headers.get("Content-Encoding", "")
    codings = [c.strip().lower() for c in value.split(",") if c.strip()]
    unknown = [c for c in codings if c not in DECODABLE]
    if unknown:
        shown = unknown[0] if _TOKEN_RE.match(unknown[0]) else "an unreadable value"
        log.warning("upstream content encoding not decodable: %s", shown)
        raise UpstreamError(
            f"The upstream's answer used a content encoding the service cannot decode ({shown}).",
            upstream_status=resp.status,
        )
    return ", ".join(codings) or "identity"


def _causes(exc: BaseException, depth: int = 0) -> Iterator[BaseException]:
    """exc and what it wraps: causes, contexts, urllib3's reason, exception arguments."""
    yield exc
    if depth > 6:
        return
    inner = [exc.__cause__, exc.__context__, getattr(exc, "reason", None), *exc.args]
    for item in inner:
        if isinstance(item, BaseException) and item is not exc:
            yield from _causes(item, depth + 1)


def _malformed_answer(exc: BaseException) -> BaseException | None:
    """The http.client error inside exc if the upstream's status line or headers were bad."""
    for cause in _causes(exc):
        # RemoteDisconnected is an HTTPException too, but it is a connection error: retry it.
        if isinstance(cause, http.client.HTTPException) and not isinstance(cause, ConnectionError):
            return cause
    return None


def backoff_seconds(attempt: int) -> float:
    """The pause before retry number `attempt` (1, 2, …): 0.1 s doubling to 1 s, plus jitter."""
    jitter = random.uniform(0, 0.05)  # noqa: S311 (spreading retries, not security)
    return min(1.0, 0.1 * 2.0 ** (attempt - 1)) + jitter


def retry_after_seconds(
    value: str | None, now: datetime | None = None, cap: float = MAX_RETRY_AFTER
) -> int:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date), 1..cap; else a default."""
    seconds = DEFAULT_RETRY_AFTER
    value = (value or "").strip()
    if value.isdigit():
        seconds = int(value)
    elif value:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            seconds = int((when - (now or datetime.now(UTC))).total_seconds())
    return int(min(max(seconds, 1), cap, MAX_RETRY_AFTER))


def _json_or_none(body: bytes) -> Any:
    try:
        return jsoncodec.loads(body)
    except (ValueError, RecursionError):
        return None


def _tallied(started: float) -> float:
    """Seconds since started, added to the current request's upstream calls (if any)."""
    seconds = time.monotonic() - started
    tally = access.TALLY.get()
    if tally is not None:
        tally.calls += 1
        tally.seconds += seconds
    return seconds


def _parse_page(body: bytes) -> dict[str, Any]:
    """The 200 body as a JSON object, or UpstreamError."""
    try:
        doc = jsoncodec.loads(body)
    except (ValueError, RecursionError):
        raise UpstreamError(
            "The upstream's answer was not valid JSON.", upstream_status=200
        ) from None
    if not isinstance(doc, dict):
        raise UpstreamError("The upstream's answer was not a JSON object.", upstream_status=200)
    return doc
