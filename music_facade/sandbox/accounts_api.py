"""The control API's account routes: add, edit and delete tracks, generate large accounts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, request

from music_facade.sandbox.answers import error, json_answer
from music_facade.sandbox.cdn import origin, with_local_cover
from music_facade.sandbox.data import TYPES, job_id
from music_facade.sandbox.edits import FIELDS, check_edits, is_number
from music_facade.sandbox.generation import OUTCOMES
from music_facade.sandbox.library import Library, NoSuchAccount, NoSuchTrack

ACCOUNTS_PATH = "/_sandbox/accounts/<user_id>"
_ADD_KEYS = {"type", "seconds", "outcome", *FIELDS}
_COUNT_KEYS = ("songs", "instrumentals")


class BadBody(ValueError):
    """A control request's body is not what the route takes; the message says why."""


def _body(allowed: set[str] | tuple[str, ...]) -> dict[str, Any]:
    body = request.get_json(force=True, silent=True)
    if not isinstance(body, dict):
        raise BadBody("expected a JSON object")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise BadBody(f"unknown key(s): {', '.join(unknown)}")
    return body


def _new_track(body: Mapping[str, Any]) -> tuple[str, dict[str, Any], float, str]:
    """The type, fields, generation seconds and outcome of a track to add."""
    music_type = body.get("type")
    if music_type not in TYPES:
        raise BadBody("type must be 'song' or 'instrumental'")
    if not isinstance(body.get("title"), str):
        raise BadBody("title is required and must be a string")
    seconds = body.get("seconds", 30)
    if not is_number(seconds, low=0):
        raise BadBody("seconds must be a number of at least 0")
    outcome = body.get("outcome", "completed")
    if outcome not in OUTCOMES:
        raise BadBody("outcome must be 'completed' or 'failed'")
    try:
        edits = check_edits(body)
    except ValueError as exc:
        raise BadBody(str(exc)) from exc
    return music_type, edits, float(seconds), outcome


def register_account_routes(app: Flask, library: Library) -> None:
    """Add the /_sandbox/accounts routes, which change `library`, to the sandbox app."""

    @app.post(ACCOUNTS_PATH + "/tracks")
    def add_track(user_id: str) -> Response:
        """Start generating a new track at the top of the account's list."""
        music_type, edits, seconds, outcome = _new_track(_body(_ADD_KEYS))
        record = library.add(user_id, music_type, edits, seconds=seconds, outcome=outcome)
        item = record["itemId"]
        return json_answer({"id": item, "job_id": job_id(user_id, item)}, 201)

    @app.patch(ACCOUNTS_PATH + "/tracks/<item_id>")
    def edit_track(user_id: str, item_id: str) -> Response:
        """Change some of a track's fields; answers its record."""
        try:
            edits = check_edits(_body(tuple(FIELDS)))
        except ValueError as exc:
            raise BadBody(str(exc)) from exc
        if not edits:
            raise BadBody(f"expected at least one of {', '.join(FIELDS)}")
        # As the music endpoint serves it, cover included.
        return json_answer(with_local_cover(library.edit(user_id, item_id, edits), origin()))

    @app.delete(ACCOUNTS_PATH + "/tracks/<item_id>")
    def delete_track(user_id: str, item_id: str) -> Response:
        """Remove a track from every endpoint."""
        library.delete(user_id, item_id)
        return Response(status=204)

    @app.post(ACCOUNTS_PATH + "/generate")
    def generate(user_id: str) -> Response:
        """Replace the account's records (or create the account) with synthetic ones."""
        body = _body(_COUNT_KEYS)
        if not body:
            raise BadBody("expected songs and/or instrumentals")
        counts = [body.get(key, 0) for key in _COUNT_KEYS]
        try:
            library.generate(user_id, *counts)
        except ValueError as exc:
            raise BadBody(str(exc)) from exc
        return json_answer(dict(zip(("user_id", *_COUNT_KEYS), (user_id, *counts), strict=True)))

    @app.errorhandler(BadBody)
    def bad_body(exc: BadBody) -> Response:
        return error(str(exc), 400)

    @app.errorhandler(NoSuchAccount)
    def no_account(exc: NoSuchAccount) -> Response:
        return error(f"TemPolor account {exc.args[0]} is not configured", 404)

    @app.errorhandler(NoSuchTrack)
    def no_track(exc: NoSuchTrack) -> Response:
        return error(f"No track {exc.args[0]} in this account", 404)
