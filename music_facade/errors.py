"""One error hierarchy, and its RFC 9457 application/problem+json form.

Each exception class names its problem's code (`class InvalidQuery(Problem,
code="invalid_query")`); status and title come from the catalogue (music_facade.core.problems).
Free of any web framework: the rules raise these, and every responder renders them with
problem_parts (Flask's one handler and the WSGI last resort are music_facade.error_handler).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from .core.problems import (
    INTERNAL_ERROR,
    MEDIA_TYPE,
    PROBLEMS,
    ProblemType,
    render,
)


class Problem(Exception):
    """An error answered to the caller; each subclass names its catalogued problem's code."""

    kind: ClassVar[ProblemType] = INTERNAL_ERROR
    status: ClassVar[int] = INTERNAL_ERROR.status
    code: ClassVar[str] = INTERNAL_ERROR.code
    title: ClassVar[str] = INTERNAL_ERROR.title

    def __init_subclass__(cls, code: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if code is not None:
            cls.kind = PROBLEMS[code]
            cls.status, cls.code, cls.title = cls.kind.status, cls.kind.code, cls.kind.title

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

    def members(self) -> dict[str, Any]:
        """The document's members after the standard ones: `errors`, when there are any."""
        if self.errors:
            return {"errors": {k: list(v) for k, v in self.errors.items()}}
        return {}

    def body(self) -> dict[str, Any]:
        """The problem document, without the request id."""
        return self.kind.document(self.detail, self.members())

    def parts(self, request_id: str | None) -> tuple[bytes, list[tuple[str, str]]]:
        """The answer's body (with the request id) and headers, for any responder."""
        return problem_parts(self.kind, self.detail, request_id, self.headers, self.members())


class InvalidQuery(Problem, code="invalid_query"):
    """A query parameter is unknown, repeated or invalid; `errors` names each."""


class UnknownUser(Problem, code="unknown_user"):
    """The query names an alias that is not configured."""


class TrackNotFound(Problem, code="track_not_found"):
    """The account has no track with that id."""


class TrackNotReady(Problem, code="track_not_ready"):
    """The track exists but has no audio yet; `track_status` says where it stands."""

    def __init__(self, detail: str, track_status: str) -> None:
        super().__init__(detail)
        self.track_status = track_status

    def members(self) -> dict[str, Any]:
        """As any problem's, then the track's status."""
        return {**super().members(), "track_status": self.track_status}


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


class UpstreamRejected(UpstreamFailure, code="upstream_rejected"):
    """The upstream refused the request as invalid (a 4xx of its own)."""


class UpstreamAuthFailed(UpstreamFailure, code="upstream_auth_failed"):
    """The upstream refused the service's own token or account."""


class UpstreamRateLimited(UpstreamFailure, code="upstream_rate_limited"):
    """The upstream answered 429 for the account."""


class UpstreamError(UpstreamFailure, code="upstream_error"):
    """The upstream answered an error, or an answer the service cannot use."""


class UpstreamTimeout(UpstreamFailure, code="upstream_timeout"):
    always_outage = True  # whichever step noticed the deadline (a read, the watchdog, retries)


class UpstreamUnreachable(UpstreamFailure, code="upstream_unreachable"):
    always_outage = True


class UpstreamUnavailable(UpstreamFailure, code="upstream_unavailable"):
    """The account's calls are paused (its circuit breaker)."""


class GuardRefusal:
    """Marks a failure answered from the account's guard state, without calling the upstream."""


class CoolingDown(GuardRefusal, UpstreamRateLimited):
    """The account is cooling down after a 429: 503 upstream_rate_limited, Retry-After left."""


class AuthFailureRemembered(GuardRefusal, UpstreamAuthFailed):
    """The account's credentials were refused moments ago: the refusal is repeated."""


class BreakerOpen(GuardRefusal, UpstreamUnavailable):
    """The account's circuit breaker is open: 503 upstream_unavailable, Retry-After left."""


BUSY_RETRY_AFTER = 1


class UpstreamBusy(UpstreamFailure, code="upstream_busy"):
    """Every upstream slot of this worker stayed taken for the bulkhead's whole max_wait."""

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
    problem: ProblemType,
    detail: str,
    request_id: str | None,
    headers: Mapping[str, str] | None = None,
    members: Mapping[str, Any] | None = None,
) -> tuple[bytes, list[tuple[str, str]]]:
    """A problem's body (with the request id) and headers, for any responder."""
    body = render(problem, detail, request_id, members)
    out = [(k, v) for k, v in (headers or {}).items() if k.lower() != "cache-control"]
    out += [("Content-Type", MEDIA_TYPE), ("Cache-Control", "no-store")]
    return body, out
