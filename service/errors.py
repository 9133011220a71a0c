"""One error hierarchy, and its RFC 9457 application/problem+json form.

Free of any web framework: the rules raise these, and every responder renders them with
problem_parts (Flask's one handler and the WSGI last resort are service.error_handler).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

PROBLEM_TYPE = "tag:music-facade,2026:problem/"
PROBLEM_MEDIA_TYPE = "application/problem+json"
INTERNAL_DETAIL = "The service failed unexpectedly; the error was logged."


class Problem(Exception):
    """An error answered to the caller; subclasses fix status, code and title."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal error"

    def __init__(
        self,
        detail: str,
        *,
        errors: Mapping[str, list[str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The problem document, without the request id."""
        doc: dict[str, Any] = {
            "type": PROBLEM_TYPE + self.code,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        if self.errors:
            doc["errors"] = {k: list(v) for k, v in self.errors.items()}
        return doc


class InvalidQuery(Problem):
    status, code, title = 400, "invalid_query", "Invalid query parameters"


class UnknownUser(Problem):
    status, code, title = 400, "unknown_user", "Unknown user alias"


class TrackNotFound(Problem):
    status, code, title = 404, "track_not_found", "No such track"


class TrackNotReady(Problem):
    """The track exists but has no audio yet; `track_status` says where it stands."""

    status, code, title = 409, "track_not_ready", "The track is not completed"

    def __init__(self, detail: str, track_status: str) -> None:
        super().__init__(detail)
        self.track_status = track_status

    def body(self) -> dict[str, Any]:
        """The problem document, with the track's status."""
        return {**super().body(), "track_status": self.track_status}


class UpstreamFailure(Problem):
    """An upstream outcome the caller cannot fix; 5xx ones may be answered from a stale copy.

    upstream_status is the upstream's HTTP status when it answered one (None: no answer, or a
    guard refused the call); outage says whether the failure counts against the account's
    circuit breaker (a 5xx-class answer, a timeout, an unreachable upstream).
    """

    always_outage: ClassVar[bool] = False
    """True: every failure of the class is an outage, whatever the code raising it passed."""

    def __init__(
        self,
        detail: str,
        *,
        errors: Mapping[str, list[str]] | None = None,
        headers: Mapping[str, str] | None = None,
        upstream_status: int | None = None,
        outage: bool = False,
    ) -> None:
        super().__init__(detail, errors=errors, headers=headers)
        self.upstream_status = upstream_status
        self.outage = outage or self.always_outage

    @property
    def stale_ok(self) -> bool:
        """Whether a stale cached page may stand in for this failure."""
        return self.status >= 500


class UpstreamRejected(UpstreamFailure):
    status, code, title = 400, "upstream_rejected", "The upstream rejected the request"


class UpstreamAuthFailed(UpstreamFailure):
    status, code, title = 502, "upstream_auth_failed", "The service's upstream account was refused"


class UpstreamRateLimited(UpstreamFailure):
    status, code, title = 503, "upstream_rate_limited", "The upstream is rate limiting the service"


class UpstreamError(UpstreamFailure):
    status, code, title = 502, "upstream_error", "The upstream answered with an error"


class UpstreamTimeout(UpstreamFailure):
    status, code, title = 504, "upstream_timeout", "The upstream did not answer in time"
    always_outage = True  # whichever step noticed the deadline (a read, the watchdog, retries)


class UpstreamUnreachable(UpstreamFailure):
    status, code, title = 502, "upstream_unreachable", "The upstream could not be reached"
    always_outage = True


class UpstreamUnavailable(UpstreamFailure):
    status, code, title = 503, "upstream_unavailable", "The upstream is failing; calls are paused"


class GuardRefusal:
    """Marks a failure answered from the account's guard state, without calling the upstream."""


class CoolingDown(GuardRefusal, UpstreamRateLimited):
    """The account is cooling down after a 429: 503 upstream_rate_limited, Retry-After left."""


class AuthFailureRemembered(GuardRefusal, UpstreamAuthFailed):
    """The account's credentials were refused moments ago: the refusal is repeated."""


class BreakerOpen(GuardRefusal, UpstreamUnavailable):
    """The account's circuit breaker is open: 503 upstream_unavailable, Retry-After left."""


BUSY_RETRY_AFTER = 1


class UpstreamBusy(UpstreamFailure):
    """Every upstream slot of this worker stayed taken for the bulkhead's whole max_wait."""

    status, code, title = 503, "upstream_busy", "The service is making too many upstream calls"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"Retry-After": str(BUSY_RETRY_AFTER)})


def failure_from_body(doc: Mapping[str, Any]) -> UpstreamFailure:
    """The UpstreamFailure another process answered (fleet single flight), rebuilt by its code."""
    code = doc.get("code")
    detail = str(doc.get("detail") or "The upstream failed.")
    headers = doc.get("headers")
    found: type[UpstreamFailure] = UpstreamError
    pending: list[type[UpstreamFailure]] = [UpstreamFailure]
    while pending:
        cls = pending.pop()
        if cls.code == code and not issubclass(cls, GuardRefusal):
            found = cls
            break
        pending.extend(cls.__subclasses__())
    # Built without the class's own __init__ (some fix their headers): the same code, status,
    # detail and headers as the leader answered.
    failure = found.__new__(found)
    UpstreamFailure.__init__(
        failure, detail, headers=headers if isinstance(headers, dict) else None
    )
    return failure


def problem_parts(
    doc: dict[str, Any], request_id: str | None, headers: Mapping[str, str] | None = None
) -> tuple[bytes, list[tuple[str, str]]]:
    """A problem document's body (with the request id) and headers, for any responder."""
    doc["request_id"] = request_id
    # ASCII escapes: any str serialises, whatever a message picked up on its way here.
    body = json.dumps(doc, separators=(",", ":")).encode("ascii")
    out = [(k, v) for k, v in (headers or {}).items() if k.lower() != "cache-control"]
    out += [("Content-Type", PROBLEM_MEDIA_TYPE), ("Cache-Control", "no-store")]
    return body, out
