"""UpstreamClient: the one way to call useapi.net: retries, timeouts, body cap, error mapping."""

from __future__ import annotations

import json
import logging
import random
import re
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter

from .config import Secret, UpstreamSettings
from .errors import (
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from .tracks import LONE_SURROGATE_RE

log = logging.getLogger(__name__)

DEFAULT_RETRY_AFTER = 30
MAX_RETRY_AFTER = 3600
# Statuses that mean the service's own token or account is wrong (596: useapi.net could not
# refresh the account's session), never the caller's fault.
AUTH_STATUSES = frozenset({401, 402, 403, 596})
RETRY_STATUSES = frozenset({502, 503, 504})
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]+")
_READ_CHUNK = 64 * 1024


class BearerAuth(requests.auth.AuthBase):
    """Adds the service's useapi.net token; the caller's own Authorization never gets here."""

    def __init__(self, token: Secret) -> None:
        self._token = token

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self._token.reveal()}"
        return r


class UpstreamClient:
    """Fetches pages of the music list; raises an UpstreamFailure for every non-200 outcome."""

    def __init__(self, settings: UpstreamSettings, pool_size: int = 10) -> None:
        self.settings = settings
        self._url = settings.base_url + "/music/"
        # Retries are _send's, not urllib3's Retry: urllib3 reads a retried 5xx answer's whole
        # body into memory to reuse the connection, which a hostile upstream could abuse.
        self.session = requests.Session()
        self.session.auth = BearerAuth(settings.token)
        self.session.trust_env = False  # no .netrc or proxy variables may replace our token
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def close(self) -> None:
        """Release pooled connections."""
        self.session.close()

    def list_music(
        self, user_id: str, type_: str, cursor: str | None, request_id: str
    ) -> dict[str, Any]:
        """GET /music/ for one page and return its JSON object, unvalidated beyond that."""
        params = {"user_id": user_id, "type": type_}
        if cursor is not None:
            params["cursor"] = cursor
        started = time.monotonic()
        resp = self._send(params, request_id)
        with resp:
            body = self._read_body(resp)
        log.info(
            "upstream answered",
            extra={
                "upstream_status": resp.status_code,
                "upstream_ms": round((time.monotonic() - started) * 1000, 1),
                "upstream_bytes": len(body),
            },
        )
        if resp.status_code != 200:
            raise self._failure(resp, body, user_id)
        return _parse_page(body)

    def _send(self, params: dict[str, str], request_id: str) -> requests.Response:
        """The upstream's answer (body unread), retrying connection errors and 502/503/504."""
        retries = self.settings.retries
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(backoff_seconds(attempt))
            try:
                resp = self.session.get(
                    self._url,
                    params=params,
                    headers={"X-Request-ID": request_id, "Accept": "application/json"},
                    timeout=(self.settings.connect_timeout, self.settings.read_timeout),
                    stream=True,
                    allow_redirects=False,
                )
            except requests.ReadTimeout:
                # Never retried: it already cost read_timeout seconds.
                raise UpstreamTimeout("The upstream did not answer in time.") from None
            except requests.RequestException as exc:
                if attempt < retries and isinstance(exc, requests.ConnectionError):
                    continue
                if isinstance(exc, requests.Timeout):
                    raise UpstreamTimeout("The upstream did not answer in time.") from None
                log.warning("upstream unreachable: %s", type(exc).__name__)
                raise UpstreamUnreachable("The upstream could not be reached.") from None
            if resp.status_code in RETRY_STATUSES and attempt < retries:
                resp.close()  # drop the connection rather than read a body we will not use
                continue
            return resp
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _read_body(self, resp: requests.Response) -> bytes:
        """Read the body as a stream, refusing it past max_body_bytes or the read deadline."""
        cap = self.settings.max_body_bytes
        declared = resp.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > cap:
            raise UpstreamError(f"The upstream's answer is larger than {cap} bytes.")
        deadline = time.monotonic() + self.settings.read_timeout
        buf = bytearray()
        try:
            while chunk := resp.raw.read1(_READ_CHUNK):
                buf += chunk
                if len(buf) > cap:
                    raise UpstreamError(f"The upstream's answer is larger than {cap} bytes.")
                # read_timeout bounds each wait; this bounds a body that drips in slowly.
                if time.monotonic() > deadline:
                    raise UpstreamTimeout("The upstream's answer did not arrive in time.")
        except urllib3.exceptions.ReadTimeoutError:
            raise UpstreamTimeout("The upstream's answer did not arrive in time.") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            log.warning("upstream body broken: %s", type(exc).__name__)
            raise UpstreamError("The upstream's answer was cut off or undecodable.") from None
        return bytes(buf)

    def _failure(
        self, resp: requests.Response, body: bytes, user_id: str
    ) -> UpstreamRejected | UpstreamAuthFailed | UpstreamRateLimited | UpstreamError:
        status = resp.status_code
        if status == 400:
            message = self._upstream_message(body, user_id)
            return UpstreamRejected(message or "The upstream rejected the request.")
        if status in AUTH_STATUSES:
            log.error("upstream refused the service's credentials: status %s", status)
            return UpstreamAuthFailed(
                f"The upstream refused the service's own credentials (status {status}). "
                "Operators: check the useapi.net token (USEAPI_TOKEN / USEAPI_TOKEN_FILE), "
                "the subscription, and that the TemPolor account is configured at useapi.net."
            )
        if status == 429:
            seconds = retry_after_seconds(resp.headers.get("Retry-After"))
            return UpstreamRateLimited(
                "The upstream is rate limiting the service; retry later.",
                headers={"Retry-After": str(seconds)},
            )
        log.warning("upstream error status %s", status)
        return UpstreamError(f"The upstream answered with status {status}.")

    def _upstream_message(self, body: bytes, user_id: str) -> str | None:
        """The upstream's 'error' text, made safe to show: no ids, no token, no control bytes."""
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            return None
        message = doc.get("error") if isinstance(doc, dict) else None
        if not isinstance(message, str) or not message.strip():
            return None
        message = message.replace(self.settings.token.reveal(), "********")
        message = message.replace(user_id, "<user>")
        message = _CONTROL_RE.sub(" ", message).strip()
        message = LONE_SURROGATE_RE.sub("\ufffd", message)
        return f"The upstream rejected the request: {message[:300]}"


def backoff_seconds(attempt: int) -> float:
    """The pause before retry number `attempt` (1, 2, …): 0.1 s doubling to 1 s, plus jitter."""
    jitter = random.uniform(0, 0.05)  # noqa: S311 (spreading retries, not security)
    return min(1.0, 0.1 * 2.0 ** (attempt - 1)) + jitter


def retry_after_seconds(value: str | None, now: datetime | None = None) -> int:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date), bounded; else a default."""
    if value is None:
        return DEFAULT_RETRY_AFTER
    value = value.strip()
    if value.isdigit():
        seconds = int(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return DEFAULT_RETRY_AFTER
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = int((when - (now or datetime.now(UTC))).total_seconds())
    return min(max(seconds, 1), MAX_RETRY_AFTER)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _parse_page(body: bytes) -> dict[str, Any]:
    """The 200 body as a JSON object, or UpstreamError."""
    try:
        doc = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise UpstreamError("The upstream's answer was not valid JSON.") from None
    if not isinstance(doc, dict):
        raise UpstreamError("The upstream's answer was not a JSON object.")
    return doc
