"""Alerts and dashboard as code: promtool checks them, their metrics exist, Prometheus agrees.

Needs Debian's `prometheus` package (/usr/bin/prometheus, /usr/bin/promtool): skipped locally
without it, a failure in CI.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from music_facade.launch import GunicornProcess
from music_facade.sandbox import SandboxServer
from tests.support.helpers import get_on_each_worker, live_service
from tests.support.metrics import wait_for_workers
from tests.support.programs import free_port, missing_program
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until
from tests.support.webhook_receiver import new_secret, receiving

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "music-facade.json"
METRIC_RE = re.compile(r"\bmusic_facade_[a-z0-9_]+\b")


def require(binary: str) -> str:
    """The binary's path; skipped locally when absent, a failure in CI."""
    found = shutil.which(binary)
    if found is None:
        missing_program(binary, "prometheus")
    return found


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def alert_exprs() -> dict[str, str]:
    return {r["alert"]: r["expr"] for r in rules() if "alert" in r}


def rule_exprs() -> dict[str, str]:
    """Every rule's expression (alerts and recordings), with each recorded series it reads
    written out as the expression it records, so the metrics underneath show."""
    recorded = {r["record"]: r["expr"] for r in rules() if "record" in r}
    found = {}
    for rule in rules():
        expr = rule["expr"]
        for name, recording in recorded.items():
            expr = expr.replace(name, f"({recording})")
        found[rule.get("alert") or rule["record"]] = expr
    return found


def dashboard_exprs() -> dict[str, str]:
    doc = json.loads(DASHBOARD.read_text())
    return {
        f"{p['title']} {t['refId']}": t["expr"] for p in doc["panels"] for t in p.get("targets", [])
    }


def test_promtool_check_rules() -> None:
    out = subprocess.run(
        [require("promtool"), "check", "rules", str(ALERTS)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 12 rules found" in out.stdout


def test_promtool_test_rules() -> None:
    out = subprocess.run(
        [require("promtool"), "test", "rules", str(ALERT_TESTS)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ALERT_TESTS.parent,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    # Every alert has at least one test that expects it to fire.
    tested = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    fired = {t["alertname"] for case in tested for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert fired == set(alert_exprs())


def test_dashboard_answers_the_operators_questions() -> None:
    doc = json.loads(DASHBOARD.read_text())
    exprs = " ".join(dashboard_exprs().values())
    for name in (
        "requests_total", "request_duration_seconds_bucket", "page_cache_total",
        "upstream_calls_total", "upstream_duration_seconds_bucket", "rate_limited_total",
        "breaker_open_until", "cooldown_until", "redis_available", "redis_errors_total",
        "cache_entries", "cache_bytes", "upstream_in_flight", "mirror_tracks",
        "mirror_last_complete_sync_timestamp_seconds", "mirror_syncs_total",
    ):  # fmt: skip
        assert name in exprs, name
    assert 'source="mirror"' in exprs  # the mirror's own upstream calls
    rows = [p for p in doc["panels"] if p["type"] == "row"]
    assert [r["title"] for r in rows] == ["Mirror"]
    below = [p for p in doc["panels"] if p["gridPos"]["y"] > rows[0]["gridPos"]["y"]]
    assert len(below) == 4
    assert all("mirror" in " ".join(t["expr"] for t in p["targets"]) for p in below)
    assert doc["uid"] == "music-facade"
    assert len({p["id"] for p in doc["panels"]}) == len(doc["panels"])


@pytest.fixture(scope="module")
def fleet_member(
    sandbox_server: SandboxServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GunicornProcess]:
    """Two workers with Redis, the mirror and a webhook (so their metrics exist too)."""
    tmp = tmp_path_factory.mktemp("prometheus-drift")
    secret = new_secret()
    (tmp / "hook-secret").write_text(secret)
    extra = f'\n[mirror]\ndatabase = "sqlite:///{tmp / "mirror.db"}"\ninterval = 1\n'
    with (
        receiving(secret) as receiver,
        RedisServer() as redis,
        live_service(
            sandbox_server,
            tmp,
            f'\n[redis]\nurl = "{redis.url}"\n{extra}'
            f'\n[[webhooks]]\nname = "crm"\nurl = "{receiver.url}"\nusers = ["*"]\n'
            f'secret_file = "{tmp / "hook-secret"}"\n',
            workers=2,
        ) as server,
    ):
        yield server


def exported(url: str) -> set[str]:
    """The sample names (with _total, _bucket, _count, _sum) /metrics shows."""
    text = requests.get(url + "/metrics", timeout=5).text
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


@pytest.mark.live
@pytest.mark.redis
def test_alerts_and_dashboard_use_only_exported_metrics(fleet_member: GunicornProcess) -> None:
    requests.get(fleet_member.url + "/music?user=studio", timeout=5)
    # The mirror's series appear once its first syncs are done, the webhook's gauges once a
    # deliverer has read the outbox.
    mirror = {
        "music_facade_mirror_tracks",
        "music_facade_mirror_last_complete_sync_timestamp_seconds",
        "music_facade_mirror_syncs_total",
        "music_facade_webhook_oldest_pending_age_seconds",
    }
    wait_until(lambda: mirror <= exported(fleet_member.url), timeout=30)
    names = exported(fleet_member.url)
    for where, exprs in (("alerts.yml", rule_exprs()), ("dashboard", dashboard_exprs())):
        for title, expr in exprs.items():
            used = set(METRIC_RE.findall(expr))
            assert used, f"{where} {title}: names no music_facade_ metric"
            assert used <= names, f"{where} {title}: not exported: {sorted(used - names)}"


# --- a real Prometheus scrapes a two-worker service --------------------------------------------


def _query(base: str, promql: str) -> list[dict[str, Any]]:
    resp = requests.get(base + "/api/v1/query", params={"query": promql}, timeout=5)
    resp.raise_for_status()
    result: list[dict[str, Any]] = resp.json()["data"]["result"]
    return result


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Any]:
    """Start Prometheus scraping a target every second; yields start(target) -> its API URL."""
    binary = require("prometheus")
    procs: list[subprocess.Popen[bytes]] = []

    def start(target: str) -> str:
        config = tmp_path / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "scrape_configs": [
                        {"job_name": "music-facade", "static_configs": [{"targets": [target]}]}
                    ],
                }
            )
        )
        port = free_port()
        log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 (closed with the process)
        procs.append(
            subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=log,
            )
        )
        log.close()
        return f"http://127.0.0.1:{port}"

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.live
def test_prometheus_counts_every_request_of_two_workers(
    sandbox_server: SandboxServer, tmp_path: Path, prometheus_for: Any
) -> None:
    sent = 37
    with live_service(sandbox_server, tmp_path, workers=2) as server:
        wait_for_workers(server)
        paths = ["/music?user=studio"] * 30 + ["/music?user=edge"] * 7
        assert get_on_each_worker(server, paths) == [200] * sent  # both workers answer
        api = prometheus_for(server.url.removeprefix("http://"))
        promql = 'sum(music_facade_requests_total{route="/music",job="music-facade"})'
        deadline = time.monotonic() + 60
        seen: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            try:
                seen = _query(api, promql)
            except requests.RequestException:
                seen = []  # Prometheus still starting
            if seen and float(seen[0]["value"][1]) == sent:
                break
            time.sleep(0.2)  # poll interval
        else:
            pytest.fail(f"Prometheus never saw {sent} requests: {seen}")
        # Both workers' pages are in that one scrape target (a per-pid gauge each).
        entries = _query(api, 'count(music_facade_cache_entries{job="music-facade"} > 0)')
        assert entries
        assert float(entries[0]["value"][1]) == 2
