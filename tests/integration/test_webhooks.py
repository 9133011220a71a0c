"""Webhooks in process: the outbox written with each change, and the deliverer sending it to a
real receiver on loopback that verifies every delivery with the `standardwebhooks` library.
Each test runs on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from standardwebhooks import Webhook

from music_facade.config import Secret, WebhookSettings
from music_facade.core.change_events import EVENTS
from music_facade.mirror import Entry, Store
from music_facade.mirror.outbox import DELIVERED, FAILED, PENDING, Route
from music_facade.webhooks import MAX_DELAY, WINDOW, Deliverer, retry_delay, signature
from tests.support.clock import Clock
from tests.support.webhook_receiver import Receiver, new_secret, receiving


def track(id_: str, status: str = "generating", progress: int = 10) -> Entry:
    body = {"id": id_, "title": f"Song {id_}", "status": status, "progress": progress}
    return Entry(id_, f"job-{id_}", body, None)


def hook(
    name: str, url: str, secret: str, users: Any = ("*",), events: Any = EVENTS
) -> WebhookSettings:
    return WebhookSettings(
        name=name,
        url=url,
        secret=Secret(secret),
        secret_source="secret_env HOOK",
        users=frozenset(users),
        events=tuple(events),
    )


def route(settings: WebhookSettings) -> Route:
    return Route(settings.name, settings.users, frozenset(settings.events))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving(new_secret()) as found:
        yield found


@pytest.fixture
def one_hook(receiver: Receiver) -> WebhookSettings:
    return hook("crm", receiver.url, receiver.secret)


@pytest.fixture
def store(mirror_database: str, clock: Clock, one_hook: WebhookSettings) -> Iterator[Store]:
    opened = Store.open(mirror_database, clock=clock, webhooks=[route(one_hook)])
    yield opened
    opened.close()


@pytest.fixture
def deliverer(store: Store, clock: Clock, one_hook: WebhookSettings) -> Iterator[Deliverer]:
    made = Deliverer([one_hook], store.outbox, clock=clock, rand=lambda: 1.0)
    yield made
    made.close()


def test_deliveries_are_made_for_the_webhooks_whose_users_and_events_match(
    mirror_database: str, clock: Clock
) -> None:
    secret = new_secret()
    hooks = [
        hook("studio-all", "https://a.test/", secret, users=["studio"]),
        hook("completions", "https://b.test/", secret, events=["track.completed"]),
        hook("demo-only", "https://c.test/", secret, users=["demo"]),
    ]
    store = Store.open(mirror_database, clock=clock, webhooks=[route(h) for h in hooks])
    try:
        store.write("studio", "song", [track("t1")])
        store.write("studio", "song", [track("t1", "completed", 100)])
        store.delete("studio", "song", ["t1"])
        made = [(d.webhook, d.event) for d in store.outbox.find()]
        assert made == [
            ("studio-all", "track.created"),
            ("completions", "track.completed"),
            ("studio-all", "track.completed"),
            ("studio-all", "track.deleted"),
        ]
        # A change nobody wants makes no delivery, and the change log is the same without one.
        store.write("demo", "song", [track("d1")])
        assert [d.webhook for d in store.outbox.find("demo-only")] == ["demo-only"]
        assert all(d.status == PENDING and d.attempts == 0 for d in store.outbox.find())
    finally:
        store.close()


def test_a_delivery_is_signed_and_verifies_with_the_standard_library(
    store: Store, deliverer: Deliverer, receiver: Receiver
) -> None:
    changes = store.write("studio", "song", [track("t1")])
    assert deliverer.run_once() == 1
    (got,) = receiver.received
    (delivery,) = store.outbox.find()
    assert got.payload is not None, "the signature did not verify"
    assert got.id == delivery.id
    assert got.id.startswith("msg_")
    assert got.headers["content-type"] == "application/json"
    assert int(got.headers["webhook-timestamp"]) == pytest.approx(time.time(), abs=5)
    assert got.payload["type"] == "track.created"
    assert got.payload["timestamp"].endswith("Z")
    assert got.payload["data"] == {
        "user": "studio",
        "type": "song",
        "track": changes[0].track,
    }
    assert (delivery.status, delivery.attempts, delivery.last_status) == (DELIVERED, 1, 204)
    assert deliverer.run_once() == 0  # delivered: never sent again


def test_the_signature_is_the_documented_hmac() -> None:
    key = b"k" * 32
    secret = "whsec_" + base64.b64encode(key).decode()
    value = signature(Webhook(secret), "msg_1", 1_700_000_000, b'{"a":1}')
    expected = hmac.new(key, b'msg_1.1700000000.{"a":1}', hashlib.sha256).digest()
    assert value == "v1," + base64.b64encode(expected).decode()


def test_a_500_is_retried_with_the_same_id_until_it_is_delivered(
    store: Store, deliverer: Deliverer, receiver: Receiver, clock: Clock
) -> None:
    receiver.answers.extend([500])
    store.write("studio", "song", [track("t1")])
    assert deliverer.run_once() == 1
    (waiting,) = store.outbox.find()
    assert (waiting.status, waiting.attempts, waiting.last_status) == (PENDING, 1, 500)
    assert deliverer.run_once() == 0  # not due yet: the first retry is up to 5 s later
    clock.now += 5.0
    assert deliverer.run_once() == 1
    first, second = receiver.received
    assert (first.answered, second.answered) == (500, 204)
    assert first.id == second.id == waiting.id
    assert first.body == second.body
    assert second.payload is not None
    (done,) = store.outbox.find()
    assert (done.status, done.attempts, done.last_status) == (DELIVERED, 2, 204)


def test_the_delay_doubles_with_jitter_up_to_ten_minutes(
    store: Store, deliverer: Deliverer, receiver: Receiver, clock: Clock
) -> None:
    assert [retry_delay(n, lambda: 1.0) for n in range(1, 10)] == [
        5, 10, 20, 40, 80, 160, 320, 600, 600,
    ]  # fmt: skip
    assert retry_delay(1, lambda: 0.0) == 2.5  # jitter: within the upper half
    assert retry_delay(1000, lambda: 1.0) == MAX_DELAY
    # The delivery itself: each failed attempt schedules the next one that much later.
    store.write("studio", "song", [track("t1")])
    gaps = []
    for _ in range(9):
        receiver.answers.append(503)
        assert deliverer.run_once() == 1
        due = store.outbox.next_due()
        assert due is not None
        gaps.append(round(due - clock.now))
        clock.now = due
    assert gaps == [5, 10, 20, 40, 80, 160, 320, 600, 600]
    assert len(set(receiver.ids())) == 1


def test_after_24_hours_of_failures_a_delivery_is_failed(
    store: Store, deliverer: Deliverer, receiver: Receiver, clock: Clock
) -> None:
    store.write("studio", "song", [track("t1")])
    receiver.answers.append(500)
    assert deliverer.run_once() == 1
    clock.now += WINDOW - 5  # nearly a day later: the next retry (10 s) would fall past it
    receiver.answers.append(500)
    assert deliverer.run_once() == 1
    (gone,) = store.outbox.find()
    assert (gone.status, gone.attempts, gone.last_status) == (FAILED, 2, 500)
    clock.now += WINDOW
    assert deliverer.run_once() == 0
    assert len(receiver.received) == 2


def test_a_redirect_is_not_followed(store: Store, deliverer: Deliverer, receiver: Receiver) -> None:
    receiver.redirect_to = "/elsewhere"
    store.write("studio", "song", [track("t1")])
    assert deliverer.run_once() == 1
    assert [r.path for r in receiver.received] == ["/hooks"]
    (waiting,) = store.outbox.find()
    assert (waiting.status, waiting.last_status) == (PENDING, 307)


def test_no_answer_within_the_deadline_is_retried(
    store: Store, receiver: Receiver, clock: Clock, one_hook: WebhookSettings
) -> None:
    quick = Deliverer([one_hook], store.outbox, clock=clock, deadline=0.3)
    try:
        receiver.delay = 2.0
        store.write("studio", "song", [track("t1")])
        started = time.monotonic()
        assert quick.run_once() == 1
        assert time.monotonic() - started < 1.5
        (waiting,) = store.outbox.find()
        assert (waiting.status, waiting.attempts, waiting.last_status) == (PENDING, 1, None)
    finally:
        quick.close()


def test_one_tracks_deliveries_arrive_in_order(
    store: Store, deliverer: Deliverer, receiver: Receiver, clock: Clock
) -> None:
    store.write("studio", "song", [track("t1")])
    store.write("studio", "song", [track("t2")])
    store.write("studio", "song", [track("t1", "completed", 100)])
    receiver.failing["t1"] = 1  # t1's creation fails once
    assert deliverer.run_once() == 2  # t1 created (500) and t2 created, not t1 completed
    assert deliverer.run_once() == 0  # t1 completed waits behind t1 created
    clock.now += 5.0
    assert deliverer.run_once() == 1  # t1 created again: delivered
    assert deliverer.run_once() == 1  # only now t1 completed
    seen = [(p["type"], p["data"]["track"]["id"]) for p in receiver.verified()]
    assert seen.index(("track.created", "t1")) < seen.index(("track.completed", "t1"))
    assert {d.status for d in store.outbox.find()} == {DELIVERED}
    assert [r.answered for r in receiver.received].count(500) == 1


def test_two_processes_on_one_database_never_deliver_one_change_twice(
    mirror_database: str, clock: Clock, receiver: Receiver, one_hook: WebhookSettings
) -> None:
    stores = [Store.open(mirror_database, clock=clock, webhooks=[route(one_hook)]) for _ in "ab"]
    deliverers = [Deliverer([one_hook], s.outbox, clock=clock) for s in stores]
    try:
        for n in range(60):
            stores[n % 2].write("studio", "song", [track(f"t{n}")])
        stop = threading.Event()
        loops = [threading.Thread(target=_until_done, args=(d, stop)) for d in deliverers]
        for loop in loops:
            loop.start()
        try:
            receiver.wait_for(60, timeout=30)
        finally:
            stop.set()
            for loop in loops:
                loop.join()
        ids = receiver.ids()
        assert len(ids) == len(set(ids)) == 60
        assert len(receiver.verified()) == 60
        assert {d.status for d in stores[0].outbox.find()} == {DELIVERED}
    finally:
        for made in deliverers:
            made.close()
        for opened in stores:
            opened.close()


def _until_done(deliverer: Deliverer, stop: threading.Event) -> None:
    while not stop.is_set():
        if not deliverer.run_once():
            stop.wait(0.01)


def test_finished_deliveries_are_kept_as_long_as_the_change_log(
    mirror_database: str, clock: Clock, receiver: Receiver, one_hook: WebhookSettings
) -> None:
    store = Store.open(
        mirror_database, clock=clock, changes_retention=100.0, webhooks=[route(one_hook)]
    )
    deliverer = Deliverer([one_hook], store.outbox, clock=clock)
    try:
        store.write("studio", "song", [track("t1")])
        store.write("studio", "song", [track("t2")])
        receiver.failing["t1"] = 2  # t1's stays pending
        assert deliverer.run_once() == 2
        clock.now += 50.0
        store.write("studio", "song", [track("t3")])
        assert deliverer.run_once() == 2  # t1 again (500 again), t3
        clock.now += 60.0  # t1 and t2 made 110 s ago, t3 60 s ago
        store.prune()
        kept = [json.loads(d.body)["data"]["track"]["id"] for d in store.outbox.find()]
        assert kept == ["t1", "t3"]  # t2 delivered long ago; t1 pending whatever its age
    finally:
        deliverer.close()
        store.close()


def test_a_claim_that_runs_out_is_taken_again(
    store: Store, deliverer: Deliverer, receiver: Receiver, clock: Clock
) -> None:
    store.write("studio", "song", [track("t1")])
    (claimed,) = store.outbox.claim(16, ["crm"])  # a process that then died
    assert store.outbox.claim(16, ["crm"]) == []
    assert deliverer.run_once() == 0
    clock.now += 31.0
    assert deliverer.run_once() == 1
    assert receiver.ids() == [claimed.id]
    # The dead process's late record is refused: the claim is no longer its own.
    assert not store.outbox.record(claimed, status=FAILED, answered=None)
    assert store.outbox.find()[0].status == DELIVERED
