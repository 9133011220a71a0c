"""Reading /metrics: every sample of a scrape, by name and label set, in process or over HTTP."""

from __future__ import annotations

import time

import pytest
import requests
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from music_facade.launch import GunicornProcess

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(client: FlaskClient, **kw: object) -> Samples:
    """Every sample of one scrape of the app's /metrics (kw: as for client.get)."""
    resp = client.get("/metrics", **kw)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.mimetype == "text/plain"
    found: Samples = {}
    for family in text_string_to_metric_families(resp.get_data(as_text=True)):
        for s in family.samples:
            found[s.name, frozenset(s.labels.items())] = s.value
    return found


def value(found: Samples, name: str, **labels: str) -> float:
    """The sample of name with exactly these labels; 0 when there is none."""
    return found.get((name, frozenset(labels.items())), 0.0)


def scrape(url: str) -> Samples:
    """Every sample of one scrape of url/metrics over HTTP."""
    resp = requests.get(url + "/metrics", timeout=5)
    assert resp.status_code == 200
    found: Samples = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            found[s.name, frozenset(s.labels.items())] = s.value
    return found


def total(found: Samples, name: str, **labels: str) -> float:
    """The sum of name's samples whose labels include these."""
    want = set(labels.items())
    return sum(v for (n, ls), v in found.items() if n == name and want <= ls)


def worker_gauges(found: Samples, name: str) -> dict[str, float]:
    """A per-process gauge's value by worker pid."""
    return {dict(ls)["pid"]: v for (n, ls), v in found.items() if n == name}


def wait_for_workers(server: GunicornProcess) -> None:
    """Poll until every worker has booted (its gauges are in /metrics)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pids = {str(p) for p in server.worker_pids()}
        if set(worker_gauges(scrape(server.url), "music_facade_cache_entries")) == pids:
            return
        time.sleep(0.05)  # poll interval
    pytest.fail("the workers' metrics did not appear")
