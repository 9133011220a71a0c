"""Every problem the service answers, defined once, and the one renderer of problem+json.

A problem is answered as an RFC 9457 `application/problem+json` document. Its `code` is the
stable identifier callers branch on; `PROBLEMS` maps each code to its HTTP status and title.
The type URI rule: the service's own problems are `tag:music-facade,2026:problem/<code>`;
generic HTTP errors (an unknown path, a wrong method, a request the HTTP server refuses) are
`about:blank` with the status's reason phrase as title and its snake_case as code.

The catalogue also holds the problems answered in front of the service by the deployment's
load balancer (deploy/nginx): a caller cannot tell who answered, so the codes share one space.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "tag:music-facade,2026:problem/"
GENERIC_TYPE = "about:blank"
INTERNAL_DETAIL = "The service failed unexpectedly; the error was logged."


@dataclass(frozen=True)
class ProblemType:
    """One kind of problem: its code, HTTP status and title, and whether it is generic HTTP."""

    code: str
    status: int
    title: str
    generic: bool = False  # about:blank: an HTTP error with no meaning of the service's own

    @property
    def type_uri(self) -> str:
        """The document's `type`."""
        return GENERIC_TYPE if self.generic else TYPE_PREFIX + self.code

    def document(self, detail: str, members: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The problem document of one occurrence, without its request id."""
        doc: dict[str, Any] = {
            "type": self.type_uri,
            "title": self.title,
            "status": self.status,
            "detail": detail,
            "code": self.code,
        }
        for name, value in (members or {}).items():
            if name in doc or name == "request_id":
                raise ValueError(f"{self.code}: member {name!r} would replace a standard one")
            doc[name] = value
        return doc


def _catalogue(*problems: ProblemType) -> Mapping[str, ProblemType]:
    found: dict[str, ProblemType] = {}
    for problem in problems:
        if problem.code in found:
            raise ValueError(f"problem code {problem.code!r} is defined twice")
        found[problem.code] = problem
    return MappingProxyType(found)


def _own(code: str, status: int, title: str) -> ProblemType:
    return ProblemType(code, status, title)


def _http(code: str, status: int, title: str) -> ProblemType:
    return ProblemType(code, status, title, generic=True)


PROBLEMS: Mapping[str, ProblemType] = _catalogue(
    # The request as sent cannot be answered.
    _own("invalid_query", 400, "Invalid query parameters"),
    _own("unknown_user", 400, "Unknown user alias"),
    _own("upstream_rejected", 400, "The upstream rejected the request"),
    # Who asks, and what they may read.
    _own("credential_missing", 401, "A credential is required"),
    _own("credential_malformed", 401, "The Authorization header is malformed"),
    _own("credential_invalid", 401, "The credential is not valid"),
    _own("credential_expired", 401, "The credential has expired"),
    _own("invalid_ticket", 401, "The event-stream ticket is not valid"),
    _own("user_not_allowed", 403, "This client may not read that account"),
    _own("metrics_forbidden", 403, "Not allowed to read the metrics"),
    _own("rate_limited", 429, "Too many requests"),
    _own("identity_provider_unavailable", 503, "The identity provider's keys cannot be fetched"),
    # Tracks and their audio.
    _own("track_not_found", 404, "No such track"),
    _own("track_not_ready", 409, "The track is not completed"),
    # A /library stream's end (only ever inside its summary) and its refusal.
    _own("limit_reached", 413, "The library has more tracks than the limit"),
    _own("page_limit_reached", 413, "The library has more pages than the limit"),
    _own("upstream_cursor_cycle", 502, "The upstream's pages lead back"),
    _own("time_limit_reached", 504, "The library took longer than the limit"),
    _own("library_busy", 503, "Too many library streams"),
    _own("mirror_syncing", 503, "The mirror has not read the whole library yet"),
    # The mirror's change log.
    _own("changes_expired", 410, "The change log no longer reaches back that far"),
    _own("too_many_streams", 429, "This caller holds too many event streams"),
    _own("events_busy", 503, "Too many event streams"),
    # The upstream, and the guards in front of it.
    _own("upstream_auth_failed", 502, "The service's upstream account was refused"),
    _own("upstream_error", 502, "The upstream answered with an error"),
    _own("upstream_unreachable", 502, "The upstream could not be reached"),
    _own("upstream_rate_limited", 503, "The upstream is rate limiting the service"),
    _own("upstream_unavailable", 503, "The upstream is failing; calls are paused"),
    _own("upstream_busy", 503, "The service is making too many upstream calls"),
    _own("upstream_timeout", 504, "The upstream did not answer in time"),
    # The process itself.
    _own("internal_error", 500, "Internal error"),
    _own("shutting_down", 503, "Shutting down"),
    # Generic HTTP errors: the framework's routing, the HTTP server's parser, the load balancer.
    _http("bad_request", 400, "Bad Request"),
    _http("forbidden", 403, "Forbidden"),
    _http("not_found", 404, "Not Found"),
    _http("method_not_allowed", 405, "Method Not Allowed"),
    _http("content_too_large", 413, "Content Too Large"),
    _http("uri_too_long", 414, "URI Too Long"),
    _http("requested_range_not_satisfiable", 416, "Requested Range Not Satisfiable"),
    _http("expectation_failed", 417, "Expectation Failed"),
    _http("request_header_fields_too_large", 431, "Request Header Fields Too Large"),
    _http("not_implemented", 501, "Not Implemented"),
    # Answered by the load balancer (deploy/nginx) when no replica can.
    _own("service_unavailable", 503, "Service Unavailable"),
    _own("service_timeout", 504, "Gateway Timeout"),
)

INTERNAL_ERROR = PROBLEMS["internal_error"]


def render(
    problem: ProblemType,
    detail: str,
    request_id: str | None,
    members: Mapping[str, Any] | None = None,
) -> bytes:
    """The problem+json body of one occurrence: the document, then its request id.

    Compact JSON with ASCII escapes: any text serialises, whatever a message picked up on
    its way here.
    """
    doc = problem.document(detail, members)
    doc["request_id"] = request_id
    return json.dumps(doc, separators=(",", ":")).encode("ascii")
