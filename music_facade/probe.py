"""`music-facade probe`: call the upstream once per alias, as the service would, and report.

It reads the same configuration and uses the same UpstreamClient as the service, so its answers
are the service's. Per alias it prints status, latency, content encoding, bytes on the wire and
decoded, records, hasNext, and schema drift against the upstream's published record model. It
names aliases only: never the token, never a raw upstream user id.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from .config import Settings
from .core.tracks import TrackSchema, reshape_page
from .core.upstream_model import RECORD_FIELDS, json_type, model_type
from .errors import UpstreamError, UpstreamFailure
from .upstream import UpstreamClient

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


@dataclass
class Drift:
    """How an alias's records differ from the model the service expects."""

    unknown_fields: list[str] = field(default_factory=list)
    """Fields beyond the upstream's published model (dotted paths inside nested objects)."""
    missing_fields: list[str] = field(default_factory=list)
    """Fields the service maps that no record carried."""
    mistyped_fields: dict[str, list[str]] = field(default_factory=dict)
    """Fields the service maps that no record carried with the model's type: the types seen."""

    def __bool__(self) -> bool:
        return bool(self.unknown_fields or self.missing_fields or self.mistyped_fields)


@dataclass
class AliasReport:
    """One alias's probe."""

    alias: str
    ok: bool
    status: int | None = None
    latency_ms: float | None = None
    content_encoding: str | None = None
    wire_bytes: int | None = None
    decoded_bytes: int | None = None
    records: int | None = None
    has_next: bool | None = None
    drift: Drift | None = None
    problem: str | None = None
    """The problem code the service would have answered."""
    detail: str | None = None


def mapped_paths() -> list[str]:
    """The upstream fields the Track mapping reads, in TrackSchema's order."""
    paths: list[str] = []
    for schema_field in TrackSchema().fields.values():
        for path in getattr(schema_field, "paths", ()):
            if path not in paths:
                paths.append(path)
    return paths


def _model_kind(path: str) -> str | None:
    model: Any = RECORD_FIELDS
    for part in path.split("."):
        if not isinstance(model, Mapping) or part not in model:
            return None
        model = model[part]
    return model_type(model)


def _unknown(record: Mapping[str, Any], model: Mapping[str, Any], prefix: str) -> Iterable[str]:
    for name, value in record.items():
        path = f"{prefix}{name}"
        if name not in model:
            yield path
        elif isinstance(model[name], Mapping) and isinstance(value, dict):
            yield from _unknown(value, model[name], path + ".")


def schema_drift(records: list[Any]) -> Drift:
    """Compare a page's records with the model: unknown fields; mapped fields missing/mistyped."""
    objects = [r for r in records if isinstance(r, dict)]
    drift = Drift()
    unknown: set[str] = set()
    for record in objects:
        unknown.update(_unknown(record, RECORD_FIELDS, ""))
    drift.unknown_fields = sorted(unknown)
    if not objects:
        return drift
    for path in mapped_paths():
        expected = _model_kind(path)
        seen: set[str] = set()
        matched = False
        for record in objects:
            value: Any = record
            present = True
            for part in path.split("."):
                if not isinstance(value, dict) or part not in value:
                    present = False
                    break
                value = value[part]
            if not present:
                continue
            kind = json_type(value)
            seen.add(kind)
            # null is how the upstream leaves a field out; it is no drift of type.
            matched = matched or kind in (expected, "null")
        if not seen:
            drift.missing_fields.append(path)
        elif not matched:
            drift.mistyped_fields[path] = sorted(seen)
    return drift


def probe_alias(client: UpstreamClient, alias: str, user_id: str, type_: str) -> AliasReport:
    """One call for one alias, reported without its user id."""
    request_id = "probe-" + uuid.uuid4().hex[:16]
    try:
        answer = client.fetch_page(user_id, type_, None, request_id)
    except UpstreamFailure as exc:
        return AliasReport(
            alias, ok=False, status=exc.upstream_status, problem=exc.code, detail=exc.detail
        )
    report = AliasReport(
        alias,
        ok=True,
        status=answer.status,
        latency_ms=round(answer.seconds * 1000, 1),
        content_encoding=answer.content_encoding,
        wire_bytes=answer.wire_bytes,
        decoded_bytes=answer.decoded_bytes,
    )
    try:
        page = reshape_page(answer.doc)
    except UpstreamError as exc:
        report.ok, report.problem, report.detail = False, exc.code, exc.detail
        return report
    records = answer.doc.get("records") or []
    report.records = len(records) if isinstance(records, list) else 0
    report.has_next = page["has_more"]
    report.drift = schema_drift(records if isinstance(records, list) else [])
    return report


def run_probe(settings: Settings, aliases: list[str], type_: str) -> list[AliasReport]:
    """Probe each alias with one UpstreamClient built as the service builds it."""
    client = UpstreamClient(settings.upstream, pool_size=1)
    try:
        return [probe_alias(client, a, settings.users[a], type_) for a in aliases]
    finally:
        client.close()


def _yes(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


def render_text(reports: list[AliasReport], out: TextIO) -> None:
    """The human-readable report."""
    for r in reports:
        head = f"{r.alias}: {'ok' if r.ok else 'FAILED'}"
        if r.problem:
            head += f" ({r.problem})"
        print(head, file=out)
        print(f"  status          {r.status if r.status is not None else '-'}", file=out)
        if r.latency_ms is not None:
            print(f"  latency         {r.latency_ms} ms", file=out)
            print(f"  encoding        {r.content_encoding}", file=out)
            print(
                f"  bytes           {r.wire_bytes} on the wire, {r.decoded_bytes} decoded", file=out
            )
        if r.records is not None:
            print(f"  records         {r.records}", file=out)
            print(f"  hasNext         {_yes(r.has_next)}", file=out)
        if r.drift is not None:
            if not r.drift:
                print("  schema drift    none", file=out)
            else:
                d = r.drift
                if d.unknown_fields:
                    print(f"  unknown fields  {', '.join(d.unknown_fields)}", file=out)
                if d.missing_fields:
                    print(f"  missing fields  {', '.join(d.missing_fields)}", file=out)
                for name, kinds in d.mistyped_fields.items():
                    print(f"  mistyped field  {name}: {'/'.join(kinds)}", file=out)
        if r.detail:
            print(f"  detail          {r.detail}", file=out)
    failed = [r.alias for r in reports if not r.ok]
    summary = "all aliases answered a valid page" if not failed else f"failed: {', '.join(failed)}"
    print(summary, file=out)


def render_json(reports: list[AliasReport], out: TextIO) -> None:
    """The report as one JSON document for scripts."""
    doc = {"ok": all(r.ok for r in reports), "aliases": [asdict(r) for r in reports]}
    print(json.dumps(doc, indent=2), file=out)


def exit_code(reports: list[AliasReport]) -> int:
    """0 when every alias answered 200 with a valid page, else 1."""
    return EXIT_OK if all(r.ok for r in reports) else EXIT_FAILED
