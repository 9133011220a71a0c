"""Log lines: JSON, one per record; secrets redacted wherever in a record they are; access lines."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator

import pytest

from music_facade import access, jsoncodec, logs

SECRET = 'tok-"quoted"-é\n-7f3a9c51'  # characters JSON escapes, and one it does not


@pytest.fixture
def handler() -> Iterator[logging.StreamHandler[io.StringIO]]:
    """A stderr-like handler as logs.logging_config makes it, writing to a string."""
    stream = io.StringIO()
    out = logging.StreamHandler(stream)
    out.setFormatter(logs.JsonLines())
    out.addFilter(logs.RedactSecrets([SECRET]))
    logger = logging.getLogger("test.logs")
    logger.addHandler(out)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield out
    logger.removeHandler(out)


def lines(out: logging.StreamHandler[io.StringIO]) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.stream.getvalue().splitlines()]


class Leaky:
    """An object whose str() carries the secret (the formatter prints extras' str())."""

    def __str__(self) -> str:
        return f"<leaky {SECRET}>"


def test_a_secret_is_redacted_from_message_extras_and_traceback(
    handler: logging.StreamHandler[io.StringIO],
) -> None:
    logger = logging.getLogger("test.logs")
    try:
        raise RuntimeError(f"failed with {SECRET}")
    except RuntimeError:
        logger.exception("sent %s", SECRET, extra={"header": SECRET, "thing": Leaky(), "n": 5})
    text = handler.stream.getvalue()
    assert SECRET not in text
    assert jsoncodec.encoded(SECRET) not in text
    [line] = lines(handler)
    assert line["message"] == "sent ********"
    assert line["header"] == "********"
    assert line["thing"] == "<leaky ********>"
    assert line["n"] == 5
    assert "RuntimeError: failed with ********" in str(line["exc_info"])


def test_the_record_itself_is_cleaned_for_every_other_handler(
    handler: logging.StreamHandler[io.StringIO],
) -> None:
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    logger = logging.getLogger("test.logs")
    keep = Keep()
    logger.addHandler(keep)  # after the redacting one, as pytest's handlers come after ours
    try:
        logger.warning("about %s", SECRET, extra={"header": SECRET})
    finally:
        logger.removeHandler(keep)
    assert SECRET not in repr(vars(seen[0]))


def test_the_presented_credential_is_a_secret_while_its_request_runs(
    handler: logging.StreamHandler[io.StringIO],
) -> None:
    logger = logging.getLogger("test.logs")
    token = logs.PRESENTED.set("mf_presented-credential")
    try:
        logger.info("key %s", "mf_presented-credential")
    finally:
        logs.PRESENTED.reset(token)
    logger.info("key %s", "mf_presented-credential")  # the request is over: not a secret now
    assert [line["message"] for line in lines(handler)] == [
        "key ********",
        "key mf_presented-credential",
    ]


def test_a_clean_line_is_formatted_once_and_kept(
    handler: logging.StreamHandler[io.StringIO],
) -> None:
    logger = logging.getLogger("test.logs")
    logger.info("plain %s", "words", extra={"count": 2**70})  # past orjson's integers
    [line] = lines(handler)
    assert line["message"] == "plain words"
    assert line["count"] == 2**70


def test_access_lines_are_complete_records(handler: logging.StreamHandler[io.StringIO]) -> None:
    # Any formatter can read an access record: %-style formatters read its __dict__.
    plain = logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s %(module)s %(funcName)s %(lineno)d "
        "%(process)s %(thread)s %(relativeCreated)d %(message)s"
    )
    record = access.ACCESS_LINES.record(logging.INFO, ("GET", "/music", 200))
    assert plain.format(record).endswith("GET /music 200")
    assert record.levelname == "INFO"
    assert record.name == "music_facade.access"
    assert abs(record.created - time.time()) < 60

    access.log.addHandler(handler)
    level = access.log.level
    access.log.setLevel(logging.INFO)
    try:
        access.log_access(
            "GET", "/music", 200, "rid-1", time.monotonic(), user="studio", client="web",
            cache="hit", remote_addr="127.0.0.1",
        )  # fmt: skip
    finally:
        access.log.removeHandler(handler)
        access.log.setLevel(level)
    [line] = lines(handler)
    assert line["message"] == "GET /music 200"
    assert {k: line[k] for k in ("request_id", "path", "status", "user", "client", "cache")} == {
        "request_id": "rid-1",
        "path": "/music",
        "status": 200,
        "user": "studio",
        "client": "web",
        "cache": "hit",
    }


def test_jsoncodec_reads_what_json_reads_and_no_more() -> None:
    assert jsoncodec.loads(b'{"a": [1, 2.5, "x"]}') == {"a": [1, 2.5, "x"]}
    # orjson refuses a lone surrogate escape; json reads it (tracks.py replaces it later).
    assert jsoncodec.loads(b'{"t": "\\ud800"}') == {"t": "\ud800"}
    for bad in (b"NaN", b'{"a": Infinity}', b"{", b"\xff"):
        with pytest.raises(ValueError):  # noqa: PT011 (json's own errors, whatever their text)
            jsoncodec.loads(bad)
    with pytest.raises((ValueError, RecursionError)):
        jsoncodec.loads(b"[" * 50_000 + b"]" * 50_000)
    assert jsoncodec.dumps({"é": [None, True, 1.5]}) == '{"é":[null,true,1.5]}'.encode()
