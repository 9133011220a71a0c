"""The deliverer's own loop (`Deliverer.run`), as a process runs it: a write wakes it at once
through the mirror's wake-ups (not its once-a-second look), it keeps many attempts in flight,
and still each track's deliveries reach the receiver one after another, in order, each once.
A real receiver on loopback verifies every delivery; SQLite and a real PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from music_facade.config import Secret, WebhookSettings
from music_facade.core.change_events import EVENTS
from music_facade.mirror import Entry, Store
from music_facade.mirror.outbox import DELIVERED, Route
from music_facade.wakeups import Wakeups
from music_facade.webhooks import CONCURRENCY, Deliverer
from tests.support.webhook_receiver import Receiver, new_secret, receiving

TRACKS = 40
STEPS = ((10, "generating"), (60, "generating"), (100, "completed"))  # created, progress, done


def entry(id_: str, progress: int, status: str) -> Entry:
    body = {"id": id_, "title": f"Song {id_}", "status": status, "progress": progress}
    return Entry(id_, f"job-{id_}", body, None)


def settings(receiver: Receiver) -> WebhookSettings:
    return WebhookSettings(
        name="crm",
        url=receiver.url,
        secret=Secret(receiver.secret),
        secret_source="secret_env HOOK",
        users=frozenset("*"),
        events=tuple(EVENTS),
    )


def route(hook: WebhookSettings) -> Route:
    return Route(hook.name, hook.users, frozenset(hook.events))


@contextmanager
def running(deliverer: Deliverer) -> Iterator[None]:
    stop = threading.Event()
    loop = threading.Thread(target=deliverer.run, args=(stop,))
    loop.start()
    try:
        yield
    finally:
        stop.set()
        loop.join(timeout=15)
        assert not loop.is_alive()
        deliverer.close()


def test_a_write_wakes_an_idle_deliverer_at_once(mirror_database: str) -> None:
    with receiving(new_secret()) as receiver:
        hook = settings(receiver)
        store = Store.open(mirror_database, webhooks=[route(hook)])
        wakeups = Wakeups(store.version, interval=0.05)
        # A look at the outbox every 60 s: only the wake-up can deliver within the test.
        deliverer = Deliverer([hook], store.outbox, poll=60, wakeups=wakeups)
        try:
            with running(deliverer):
                time.sleep(0.3)  # idle: its first look found nothing
                written = time.monotonic()
                store.write("studio", "song", [entry("t1", 10, "generating")])
                receiver.wait_for(1, timeout=5)
                assert time.monotonic() - written < 5
            assert [p["type"] for p in receiver.verified()] == ["track.created"]
            assert wakeups.waiting() == 0  # the stopped loop let go of the poller
        finally:
            store.close()


def test_attempts_run_side_by_side_and_each_track_stays_in_order(mirror_database: str) -> None:
    with receiving(new_secret()) as receiver:
        receiver.delay = 0.05  # each answer takes a while: one at a time would take 6 s
        hook = settings(receiver)
        store = Store.open(mirror_database, webhooks=[route(hook)])
        try:
            for progress, status in STEPS:
                store.write(
                    "studio", "song", [entry(f"t{n}", progress, status) for n in range(TRACKS)]
                )
            wanted = TRACKS * len(STEPS)
            started = time.monotonic()
            with running(Deliverer([hook], store.outbox, poll=0.2)):
                receiver.wait_for(wanted, timeout=30)
                took = time.monotonic() - started
            # Serially 120 x 0.05 s = 6 s; side by side each track's three in turn, ~0.3 s.
            assert took < wanted * receiver.delay / 2, took
            assert CONCURRENCY > 1
            ids = receiver.ids()
            assert len(ids) == len(set(ids)) == wanted  # each once
            order: dict[str, list[str]] = {}
            for payload in receiver.verified():
                order.setdefault(payload["data"]["track"]["id"], []).append(payload["type"])
            assert len(order) == TRACKS
            for events in order.values():
                assert events == ["track.created", "track.progress", "track.completed"]
            assert {d.status for d in store.outbox.find()} == {DELIVERED}
        finally:
            store.close()
