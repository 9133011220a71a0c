"""Problem codes as the suite sees them: the catalogue's, the contract's examples, nginx's pages,
and the codes the service emitted, recorded from every answer a test checks.

`record_response` and `record` take what came back from the service: tests.contract's
check_response calls it for every response it checks (CheckedClient's in-process ones and the
live ones alike), and the tests that read problems off the wire without it (gunicorn's and
nginx's refusals) call `record`. A code outside the catalogue fails the test that saw it.

`SessionScope` (registered by tests/conftest.py) knows whether the session runs the whole
suite, which tests/test_problem_catalogue.py needs before it compares the codes emitted with
the catalogue.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from music_facade.core.problems import MEDIA_TYPE, PROBLEMS

PLUGIN = "problem-codes"
# The test that compares the emitted codes with the catalogue: it runs after every other.
FINAL_TEST = "test_the_suite_emitted_every_catalogued_code"
TESTS_DIR = Path(__file__).resolve().parents[1]
NGINX_CONF = TESTS_DIR.parent / "deploy" / "nginx" / "nginx.conf"
_NGINX_RETURN_RE = re.compile(r"return (\d{3}) '(\{.*\})\\n';")
_SUMMARY_MARK = "#summary"

EMITTED: set[str] = set()
"""Every problem code the service answered in this session, in any test."""


def catalogue_codes() -> frozenset[str]:
    """Every problem code the service (or the load balancer in front of it) can answer."""
    return frozenset(PROBLEMS)


def check_catalogued(doc: Mapping[str, Any], where: str) -> str:
    """The document's code, once it is catalogued with the same type, title and status."""
    code = doc.get("code")
    problem = PROBLEMS.get(code) if isinstance(code, str) else None
    assert problem is not None, (
        f"{where}: problem code {code!r} is not in the catalogue (music_facade/core/problems.py)"
    )
    expected = {"type": problem.type_uri, "title": problem.title, "status": problem.status}
    for name, value in expected.items():
        if name in doc:
            assert doc[name] == value, (
                f"{where}: problem {code}'s {name} is {doc[name]!r}, the catalogue says {value!r}"
            )
    return problem.code


def record(doc: Mapping[str, Any], where: str = "an answer") -> None:
    """A problem document the service answered: catalogued, and emitted from now on."""
    EMITTED.add(check_catalogued(doc, where))


def record_response(label: str, content_type: str | None, body: bytes) -> None:
    """Record the problem a response carries: a problem+json body, or a /library summary's."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if not body:
        return
    if media_type == MEDIA_TYPE:
        doc = json.loads(body)
        if isinstance(doc, dict):
            record(doc, label)
        return
    for problem in summary_problems(media_type, body.decode("utf-8", "replace")):
        record(problem, f"{label}, in its summary")


def summary_problems(media_type: str, text: str) -> Iterator[Mapping[str, Any]]:
    """The problem a /library stream's summary names (NDJSON: the document; CSV: its code)."""
    if media_type == "application/x-ndjson":
        lines = text.splitlines()
        last = json.loads(lines[-1]) if lines else None
        summary = last.get("summary") if isinstance(last, dict) else None
        problem = summary.get("problem") if isinstance(summary, dict) else None
        if isinstance(problem, dict):
            yield problem
    elif media_type == "text/csv":
        rows = list(csv.reader(io.StringIO(text)))
        last = rows[-1] if rows else []
        if len(last) == 4 and last[0] == _SUMMARY_MARK and last[3]:
            yield {"code": last[3]}


def openapi_examples() -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(where, problem) for every problem a response example in openapi.yaml shows."""
    from . import contract  # it imports this module, to record what it checks

    yield from _examples_in(contract.spec(), "")


def _examples_in(node: Any, pointer: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    if isinstance(node, dict):
        content = node.get("content")
        if isinstance(content, dict):
            for media_type, media in content.items():
                where = f"{pointer}/content/{media_type.replace('/', '~1')}"
                yield from _media_examples(media_type, media, where)
        for key, value in node.items():
            yield from _examples_in(value, f"{pointer}/{str(key).replace('/', '~1')}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _examples_in(value, f"{pointer}/{index}")


def _media_examples(
    media_type: str, media: Any, where: str
) -> Iterator[tuple[str, Mapping[str, Any]]]:
    if not isinstance(media, dict):
        return
    values = [(f"{where}/example", media["example"])] if "example" in media else []
    values += [
        (f"{where}/examples/{name}", example.get("value"))
        for name, example in (media.get("examples") or {}).items()
    ]
    for at, value in values:
        if media_type == MEDIA_TYPE and isinstance(value, dict):
            yield f"#{at}", value
        elif isinstance(value, str):
            for problem in summary_problems(media_type, value):
                yield f"#{at}", problem


def nginx_pages() -> list[tuple[int, Mapping[str, Any]]]:
    """(status, document) of every problem deploy/nginx answers from its own static pages."""
    text = NGINX_CONF.read_text(encoding="utf-8")
    return [(int(status), json.loads(body)) for status, body in _NGINX_RETURN_RE.findall(text)]


def differences(catalogue: Iterable[str], emitted: Iterable[str]) -> list[str]:
    """What tells the catalogue and the emitted codes apart, one line per side (none: equal)."""
    catalogued, seen = set(catalogue), set(emitted)
    lines = []
    if catalogued - seen:
        lines.append(
            "catalogued, but no test saw the service answer them (provoke each in a test, or "
            f"remove it from the catalogue): {sorted(catalogued - seen)}"
        )
    if seen - catalogued:
        lines.append(
            f"answered by the service, but not in the catalogue: {sorted(seen - catalogued)}"
        )
    return lines


class SessionScope:
    """Whether this session runs the whole suite: no selection, nothing deselected, no failure."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.deselected = 0
        self.failed: list[str] = []
        self.skipped: list[str] = []

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        """The comparison runs last, once every other test has recorded what it saw."""
        last = [item for item in items if item.name == FINAL_TEST]
        items[:] = [item for item in items if item.name != FINAL_TEST] + last

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        """-k, -m, --deselect and --lf all deselect through this hook."""
        self.deselected += len(items)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        """A module that failed to collect ran none of its tests."""
        if report.failed:
            self.failed.append(report.nodeid)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Failures and skips, in any phase."""
        if report.failed:
            self.failed.append(report.nodeid)
        elif report.skipped and not hasattr(report, "wasxfail"):
            self.skipped.append(report.nodeid)

    def partial(self, *, as_a_share: bool = False) -> str | None:
        """Why this session does not run the whole suite; None when it does (so far).

        as_a_share: judge a pytest-xdist worker's session as its share of a whole run (its
        collection, selection and failures), not as a whole run itself."""
        option = self.config.option
        if hasattr(self.config, "workerinput") and not as_a_share:
            return "the suite is split over pytest-xdist workers: the controller compares"
        if self.deselected:
            return f"{self.deselected} tests were deselected"
        if getattr(option, "ignore", None) or getattr(option, "ignore_glob", None):
            return "--ignore left tests out"
        whole = {self.config.rootpath.resolve(), TESTS_DIR}
        for arg in self.config.args:
            path, _, name = arg.partition("::")
            if name or (self.config.invocation_params.dir / path).resolve() not in whole:
                return f"only {arg} was asked for"
        if self.failed:
            return f"{len(self.failed)} tests failed (first: {self.failed[0]})"
        return None


class SplitRun:
    """The comparison when pytest-xdist splits the suite over workers (registered by
    tests/conftest.py when xdist is on): each worker writes the codes it saw and whether its
    share was whole; the controller compares their union with the catalogue at the end and fails
    the run on a difference, as the final test does in a single process."""

    def __init__(self, config: pytest.Config, scope: SessionScope) -> None:
        self.config = config
        self.scope = scope
        self.shared: Path | None = None
        self.collected = 0  # tests a worker collected (and kept after -m, -k)
        self.ran = 0  # tests the workers reported on (one teardown report each)

    def _say(self, text: str) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(text)
        else:
            print(text)

    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """Controller: how many tests the run holds (every worker collects them all)."""
        self.collected = len(ids)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "teardown" and not hasattr(self.config, "workerinput"):
            self.ran += 1

    def pytest_configure_node(self, node: Any) -> None:
        """Controller: tell each worker where to write (one directory for the run)."""
        if self.shared is None:
            self.shared = Path(tempfile.mkdtemp(prefix="problem-codes-"))
        node.workerinput["problem_codes_dir"] = str(self.shared)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        workerinput = getattr(self.config, "workerinput", None)
        if workerinput is not None:
            if "problem_codes_dir" in workerinput:
                share = {
                    "emitted": sorted(EMITTED),
                    "partial": self.scope.partial(as_a_share=True),
                    "skipped": [n for n in self.scope.skipped if FINAL_TEST not in n],
                }
                out = Path(workerinput["problem_codes_dir"]) / f"{workerinput['workerid']}.json"
                out.write_text(json.dumps(share))
            return
        if self.shared is None:  # xdist loaded but not splitting (-n 0)
            return
        if self.ran < self.collected and not session.shouldstop and not session.shouldfail:
            # xdist hands tests out by node id: tests sharing one (as a plugin's generated
            # items may) would silently never run.
            self._say(
                f"FAILED: {self.collected - self.ran} of the {self.collected} collected tests "
                "never ran (duplicate node ids?)"
            )
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        shares = [json.loads(f.read_text()) for f in sorted(self.shared.glob("*.json"))]
        shutil.rmtree(self.shared, ignore_errors=True)
        expected = int(getattr(self.config.option, "numprocesses", 0) or 0)
        reasons = [share["partial"] for share in shares if share["partial"]]
        if len(shares) < expected:
            reasons.append(f"{expected - len(shares)} workers did not report")
        failed = [n for n in self.scope.failed if FINAL_TEST not in n]
        if failed:
            reasons.append(f"{len(failed)} tests failed (first: {failed[0]})")
        emitted = {code for share in shares for code in share["emitted"]}
        lines = differences(catalogue_codes(), emitted)
        skipped = [n for share in shares for n in share["skipped"]]
        if reasons:
            self._say(f"problem catalogue: not compared ({reasons[0]})")
        elif lines and skipped:
            self._say(f"problem catalogue: {len(skipped)} tests were skipped and may have emitted "
                "the rest: " + "; ".join(lines))  # fmt: skip
        elif lines:
            self._say("problem catalogue: FAILED\n" + "\n".join(lines))
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        else:
            self._say(f"problem catalogue: every one of the {len(catalogue_codes())} codes was "
                "answered by the service across the workers")  # fmt: skip
