"""One problem catalogue (music_facade/core/problems.py): the contract shows every code, nginx's
pages use only catalogued ones, and the whole suite sees the service answer every one of them.
"""

from __future__ import annotations

import json
import re

import pytest
from flask.testing import FlaskClient
from werkzeug.exceptions import default_exceptions

from music_facade.core.problems import INTERNAL_DETAIL, PROBLEMS, render
from tests.support import problem_codes
from tests.support.helpers import AppFactory
from tests.support.problem_codes import catalogue_codes


def test_each_problem_is_well_formed() -> None:
    assert len(PROBLEMS) >= 30
    for code, problem in PROBLEMS.items():
        assert code == problem.code
        assert re.fullmatch(r"[a-z][a-z0-9_]*", code), code
        assert 400 <= problem.status <= 599, code
        if problem.generic:
            # The RFC 9110 reason phrase, and its snake_case as the code.
            assert problem.type_uri == "about:blank"
            assert problem.title.lower().replace(" ", "_") == code
        else:
            assert problem.type_uri == f"tag:music-facade,2026:problem/{code}"


def test_the_frameworks_http_errors_match_their_entries() -> None:
    # music_facade.errors answers werkzeug's exceptions by the snake_case of their name, where a
    # generic problem of that code is catalogued: its status and title are werkzeug's own.
    matched = 0
    for status, exception in default_exceptions.items():
        name = exception().name
        problem = PROBLEMS.get(name.lower().replace(" ", "_"))
        if problem is not None and problem.generic:
            matched += 1
            assert (problem.status, problem.title) == (status, name)
    assert matched >= 3  # not_found, method_not_allowed, requested_range_not_satisfiable


def test_render_writes_the_document_then_its_own_members_then_the_request_id() -> None:
    problem = PROBLEMS["track_not_ready"]
    body = render(problem, "Not yet \u00e9.", "rid-1", {"track_status": "generating"})
    assert body == (
        b'{"type":"tag:music-facade,2026:problem/track_not_ready",'
        b'"title":"The track is not completed","status":409,"detail":"Not yet \\u00e9.",'
        b'"code":"track_not_ready","track_status":"generating","request_id":"rid-1"}'
    )
    assert json.loads(render(PROBLEMS["internal_error"], INTERNAL_DETAIL, None)) == {
        "type": "tag:music-facade,2026:problem/internal_error",
        "title": "Internal error",
        "status": 500,
        "detail": INTERNAL_DETAIL,
        "code": "internal_error",
        "request_id": None,
    }
    for member in ("code", "status", "request_id"):
        with pytest.raises(ValueError, match="would replace a standard one"):
            render(problem, "x", "rid", {member: "other"})


def test_the_contract_shows_an_example_of_every_catalogued_code() -> None:
    examples = list(problem_codes.openapi_examples())
    for where, doc in examples:
        problem_codes.check_catalogued(doc, where)
    shown = {doc["code"] for _, doc in examples}
    assert shown == catalogue_codes(), (
        f"catalogued, without an example in openapi.yaml: {sorted(catalogue_codes() - shown)}"
    )


def test_nginx_answers_only_catalogued_problems() -> None:
    pages = problem_codes.nginx_pages()
    assert len(pages) >= 7, pages
    for status, doc in pages:
        code = problem_codes.check_catalogued(doc, f"deploy/nginx's {status} page")
        assert PROBLEMS[code].status == status, code
        assert set(doc) == {"type", "title", "status", "detail", "code", "request_id"}


def test_a_range_past_the_end_of_a_docs_asset_is_416(make_app: AppFactory) -> None:
    # The assets are not API paths (the contract checker would want 404): a plain client.
    assets = FlaskClient(make_app())
    resp = assets.get("/docs/swagger-ui.css", headers={"Range": "bytes=100000000-"})
    assert resp.status_code == 416
    assert resp.headers["Content-Type"] == "application/problem+json"
    doc = resp.get_json()
    assert doc["code"] == "requested_range_not_satisfiable"
    assert doc["request_id"] == resp.headers["X-Request-ID"]
    problem_codes.record(doc, "GET /docs/swagger-ui.css with a Range past its end")


def test_differences_name_the_codes_missing_on_either_side() -> None:
    assert problem_codes.differences({"a", "b"}, {"b", "a"}) == []
    missing, extra = problem_codes.differences({"a", "b", "c"}, {"b", "d"})
    assert "no test saw the service answer them" in missing
    assert "['a', 'c']" in missing
    assert "not in the catalogue: ['d']" in extra


def test_an_uncatalogued_or_inconsistent_code_is_refused() -> None:
    with pytest.raises(AssertionError, match="'teapot' is not in the catalogue"):
        problem_codes.record({"code": "teapot", "status": 418}, "a test")
    with pytest.raises(AssertionError, match="status is 400, the catalogue says 404"):
        problem_codes.record({"code": "not_found", "status": 400}, "a test")
    assert "teapot" not in problem_codes.EMITTED


def test_the_suite_emitted_every_catalogued_code(request: pytest.FixtureRequest) -> None:
    # Runs after every other test (tests.support.problem_codes.SessionScope puts it last).
    assert catalogue_codes() >= problem_codes.EMITTED  # each was refused where it was seen
    scope = request.config.pluginmanager.get_plugin(problem_codes.PLUGIN)
    assert isinstance(scope, problem_codes.SessionScope)
    differences = problem_codes.differences(catalogue_codes(), problem_codes.EMITTED)
    partial = scope.partial()
    if partial is not None:
        pytest.skip(f"not the whole suite ({partial}): the emitted codes are not compared")
    if differences and scope.skipped:
        pytest.skip(
            f"{len(scope.skipped)} tests were skipped and may have emitted the rest: "
            + "; ".join(differences)
        )
    assert not differences, "\n".join(differences)
