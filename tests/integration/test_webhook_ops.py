"""Operating webhooks: the metrics a deliverer feeds while it sends to a real receiver on
loopback, the outbox's summary and retry (SQLite and a real PostgreSQL), and `music-facade
webhooks status|retry` as an operator runs it, a subprocess reading a real SQLite mirror."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from music_facade.config import Settings, load_settings
from music_facade.metrics import Metrics
from music_facade.mirror import Entry, Store
from music_facade.mirror.outbox import DELIVERED, FAILED, PENDING, Route
from music_facade.webhooks import WINDOW, Deliverer
from tests.support.clock import Clock
from tests.support.config_files import TOKEN, write
from tests.support.webhook_receiver import Receiver, new_secret, receiving

CONFIG = """\
[users]
studio = "1001"

[mirror]
database = "{url}"

[[webhooks]]
name = "crm"
url = "{receiver}"
secret_env = "HOOK_SECRET"
users = ["*"]

[[webhooks]]
name = "audit"
url = "https://audit.example.test/hooks"
secret_env = "HOOK_SECRET"
users = ["studio"]
events = ["track.deleted"]
"""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def track(id_: str, status: str = "generating") -> Entry:
    return Entry(id_, f"job-secret-{id_}", {"id": id_, "title": id_, "status": status}, None)


def settings_for(tmp_path: Path, url: str, receiver: str, secret: str) -> Settings:
    path = write(tmp_path, CONFIG.format(url=url, receiver=receiver))
    return load_settings({"USEAPI_TOKEN": TOKEN, "HOOK_SECRET": secret}, path=path)


def routes(settings: Settings) -> list[Route]:
    return [Route(h.name, h.users, frozenset(h.events)) for h in settings.webhooks]


def samples(measures: Metrics) -> Samples:
    found: Samples = {}
    text = generate_latest(measures.registry).decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[s.name, frozenset(s.labels.items())] = s.value
    return found


def value(found: Samples, name: str, **labels: str) -> float:
    return found[name, frozenset(labels.items())]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving(new_secret()) as found:
        yield found


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_the_deliverer_counts_its_attempts_and_reports_the_backlog(
    tmp_path: Path, mirror_database: str, receiver: Receiver, clock: Clock
) -> None:
    settings = settings_for(tmp_path, mirror_database, receiver.url, receiver.secret)
    measures = Metrics(settings)
    store = Store.open(mirror_database, clock=clock, webhooks=routes(settings))
    deliverer = Deliverer(
        settings.webhooks[:1],  # "crm" alone: "audit" (a name that resolves nowhere) waits
        store.outbox,
        clock=clock,
        rand=lambda: 1.0,
        observe=measures.webhook_attempt,
        backlog=measures.webhook_backlog,
    )
    try:
        # Every configured webhook's counters exist from the start, at zero.
        found = samples(measures)
        for name in ("crm", "audit"):
            for outcome in ("delivered", "retried", "failed"):
                total = "music_facade_webhook_deliveries_total"
                assert value(found, total, webhook=name, outcome=outcome) == 0
        store.write("studio", "song", [track("t1"), track("t2")])
        store.delete("studio", "song", ["t2"])
        clock.now += 30
        deliverer.report_backlog()
        found = samples(measures)
        assert value(found, "music_facade_webhook_pending", webhook="crm") == 3
        assert value(found, "music_facade_webhook_oldest_pending_age_seconds", webhook="crm") == 30
        assert store.outbox.backlog(["audit"])["audit"].pending == 1  # the deletion

        receiver.failing["t1"] = 1  # t1's first attempt gets a 500, t2's go through
        assert deliverer.run_once() == 2  # t1 and t2's creation; t2's deletion waits for it
        assert deliverer.run_once() == 1
        deliverer.report_backlog()
        found = samples(measures)
        total = "music_facade_webhook_deliveries_total"
        assert value(found, total, webhook="crm", outcome="delivered") == 2
        assert value(found, total, webhook="crm", outcome="retried") == 1
        assert value(found, "music_facade_webhook_pending", webhook="crm") == 1
        age = value(found, "music_facade_webhook_oldest_pending_age_seconds", webhook="crm")
        assert age == 30

        # t1 fails until its day is over.
        receiver.failing["t1"] = 100
        clock.now += WINDOW
        assert deliverer.run_once() == 1
        deliverer.report_backlog()
        found = samples(measures)
        assert value(found, total, webhook="crm", outcome="failed") == 1
        assert value(found, "music_facade_webhook_pending", webhook="crm") == 0
        assert value(found, "music_facade_webhook_oldest_pending_age_seconds", webhook="crm") == 0
        # Labels are the configured names: no receiver's URL or secret in the metrics.
        text = generate_latest(measures.registry).decode()
        assert "127.0.0.1" not in text
        assert "audit.example" not in text
        assert receiver.secret not in text
    finally:
        deliverer.close()
        store.close()


def test_the_summary_and_a_retry(tmp_path: Path, mirror_database: str, clock: Clock) -> None:
    settings = settings_for(tmp_path, mirror_database, "https://crm.example.test/", new_secret())
    store = Store.open(mirror_database, clock=clock, webhooks=routes(settings))
    outbox = store.outbox
    try:
        made = clock.now
        store.write("studio", "song", [track("a"), track("b"), track("c"), track("d")])
        a, b, c, d = outbox.find("crm")
        claimed = {one.id: one for one in outbox.claim(16, ["crm"])}
        outbox.record(claimed[a.id], status=DELIVERED, answered=200)
        outbox.record(claimed[b.id], status=FAILED, answered=503)
        outbox.record(claimed[c.id], status=FAILED, answered=None)  # no answer
        outbox.record(claimed[d.id], status=PENDING, answered=None, next_attempt_at=made + 60)
        clock.now += 100
        summary = outbox.summary(["crm", "audit"], delivered_since=made - 1)
        crm = summary["crm"]
        assert (crm.pending, crm.failed, crm.delivered) == (1, 2, 1)
        assert crm.oldest_created_at == made
        # The newest delivery an attempt failed for is d: pending, no answer yet.
        assert (crm.last_error_status, crm.failed_attempts) == (None, True)
        assert summary["audit"] == type(crm)(0, 0, 0, None, None, False)
        # Delivered ones made before the window are not counted.
        assert outbox.summary(["crm"], delivered_since=made + 1)["crm"].delivered == 0

        assert outbox.retry("audit") == 0
        assert outbox.retry("crm") == 2
        by_id = {one.id: one for one in outbox.find("crm")}
        for again in (by_id[b.id], by_id[c.id]):
            assert (again.status, again.attempts, again.created_at) == (PENDING, 1, clock.now)
        assert by_id[a.id].status == DELIVERED
        # Due now: the deliverer's next claim takes them (and d, due since made + 60).
        assert {x.id for x in outbox.claim(16, ["crm"])} == {b.id, c.id, d.id}
        assert outbox.retry("crm") == 0  # nothing failed any more
    finally:
        store.close()


# --- the command line --------------------------------------------------------------------------


def run_cli(tmp_path: Path, config: str, *args: str) -> subprocess.CompletedProcess[str]:
    environ = {
        "MUSIC_CONFIG": write(tmp_path, config),
        "USEAPI_TOKEN": TOKEN,
        "HOOK_SECRET": new_secret(),
        "PATH": "/usr/bin:/bin",
    }
    return subprocess.run(
        [sys.executable, "-m", "music_facade", "webhooks", *args],
        env=environ,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def fill(tmp_path: Path, url: str) -> None:
    """crm: one delivered, one failed with a 500, one pending (made now); audit: nothing."""
    settings = settings_for(tmp_path, url, "https://crm.example.test/", new_secret())
    store = Store.open(url, webhooks=routes(settings))
    try:
        store.write("studio", "song", [track("a"), track("b"), track("c")])
        outbox = store.outbox
        first, second, _ = outbox.find("crm")
        claimed = {x.id: x for x in outbox.claim(16, ["crm"])}
        outbox.record(claimed[first.id], status=DELIVERED, answered=204)
        outbox.record(claimed[second.id], status=FAILED, answered=500)
    finally:
        store.close()


def test_status_as_json(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mirror.db'}"
    fill(tmp_path, url)
    config = CONFIG.format(url=url, receiver="https://crm.example.test/")
    done = run_cli(tmp_path, config, "status", "--json")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["database"] == url
    crm, audit = shown["webhooks"]
    assert crm["webhook"] == "crm"
    assert (crm["pending"], crm["failed"], crm["delivered_24h"]) == (1, 1, 1)
    assert 0 <= crm["oldest_pending_age_seconds"] < 30
    assert crm["last_error"] == "HTTP 500"
    assert audit == {
        "webhook": "audit",
        "pending": 0,
        "failed": 0,
        "delivered_24h": 0,
        "oldest_pending_age_seconds": None,
        "last_error": None,
    }
    assert "job-secret" not in done.stdout
    assert "crm.example" not in done.stdout  # the receivers' URLs are not shown


def test_status_as_a_table_then_a_retry(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mirror.db'}"
    fill(tmp_path, url)
    config = CONFIG.format(url=url, receiver="https://crm.example.test/")
    done = run_cli(tmp_path, config, "status")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"mirror database {url}"
    assert lines[1] == ("WEBHOOK  PENDING  FAILED  DELIVERED 24H  OLDEST PENDING  LAST ERROR")
    crm = lines[2].split()
    assert crm[:4] == ["crm", "1", "1", "1"]
    assert crm[-2:] == ["HTTP", "500"]
    assert lines[3].split() == ["audit", "0", "0", "0", "-", "-"]

    retried = run_cli(tmp_path, config, "retry", "crm")
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout == "webhook crm: 1 failed deliveries pending again, due now\n"
    after = json.loads(run_cli(tmp_path, config, "status", "--json").stdout)["webhooks"][0]
    assert (after["pending"], after["failed"]) == (2, 0)


def test_retry_of_an_unknown_webhook(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mirror.db'}"
    fill(tmp_path, url)
    config = CONFIG.format(url=url, receiver="https://crm.example.test/")
    done = run_cli(tmp_path, config, "retry", "billing")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        "music-facade: 'billing' is not a configured webhook (configured: crm, audit)\n"
    )


def test_status_without_webhooks_or_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mirror.db'}"
    bare = f'[users]\nstudio = "1001"\n\n[mirror]\ndatabase = "{url}"\n'
    done = run_cli(tmp_path, bare, "status")
    assert (done.returncode, done.stderr) == (
        2,
        "music-facade: the configuration has no [[webhooks]]\n",
    )
    config = CONFIG.format(url=url, receiver="https://crm.example.test/")
    done = run_cli(tmp_path, config, "status")
    assert done.returncode == 2
    assert "no such file" in done.stderr
