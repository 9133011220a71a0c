"""deploy/k8s/: the bundle `kubectl apply -k deploy/k8s` applies, valid for Kubernetes (offline
schemas) and consistent with itself, and its Redis working with the service for real.

The checks that matter: the grace period outlasts preStop plus gunicorn's graceful_timeout;
every selector, port and name one object gives another exists there (Services, probes,
NetworkPolicies, the Ingress, the HPA and PDB, MUSIC_REDIS_URL, the Secret's keys the password
variables name, the Prometheus scrape job); the bundle never applies a placeholder Secret and
brings no PostgreSQL (the mirror's database is the operator's); and its Redis, started with
the bundle's own command, ConfigMap and generated password, answers its readiness probe and
the service, whose mirror database is then a real PostgreSQL.
"""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import subprocess
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import psycopg
import pytest
import redis
import requests
import yaml
from psycopg import sql
from redis.backoff import NoBackoff
from redis.retry import Retry

from music_facade.config import parse_settings
from music_facade.launch import GunicornProcess
from music_facade.sandbox import SandboxServer
from tests.support.deploy_render import (
    K8S,
    NGINX_TEMPLATE,
    REPO,
    gunicorn_setting,
    render_kustomization,
)
from tests.support.postgres_server import PostgresServer
from tests.support.programs import free_port, missing_program
from tests.support.redis_server import require_redis_server

SCRAPE = REPO / "deploy" / "prometheus" / "kubernetes-scrape.yml"
# The oldest Kubernetes these manifests claim to support, and the newest the schemas know.
VERSIONS = ["1.30", kubernetes_validate.latest_version()]
# Stand-ins for the two local files the secretGenerator reads (never in the repository).
SECRET_FILES = {
    "secrets/useapi_token": b"test-useapi-token\n",
    "secrets/redis_password": b"0123456789abcdef0123456789abcdef\n",
    "secrets/mirror_password": b"fedcba9876543210fedcba9876543210\n",
}
BUNDLE = render_kustomization(files=SECRET_FILES)


def _named(obj: dict[str, Any], name: str) -> bool:
    """Whether obj is called name, or name-<hash> (a generated Secret)."""
    return (
        re.fullmatch(rf"{re.escape(name)}(-[0-9a-f]{{10}})?", obj["metadata"]["name"]) is not None
    )


def _one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in BUNDLE if o["kind"] == kind and (name is None or _named(o, name))]
    assert len(found) == 1, (kind, name, [o["metadata"]["name"] for o in found])
    return found[0]


def _all(kind: str) -> list[dict[str, Any]]:
    return [o for o in BUNDLE if o["kind"] == kind]


def _deployment(name: str = "music-facade") -> dict[str, Any]:
    found = [d for d in _all("Deployment") if d["metadata"]["name"] == name]
    assert len(found) == 1, name
    return found[0]


def _pod(name: str = "music-facade") -> dict[str, Any]:
    pod: dict[str, Any] = _deployment(name)["spec"]["template"]["spec"]
    return pod


def _pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def _container(name: str = "music-facade") -> dict[str, Any]:
    containers = _pod(name)["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def _selected(selector: dict[str, str]) -> list[dict[str, Any]]:
    """The bundle's Deployments whose pods a label selector matches."""
    return [d for d in _all("Deployment") if _selects(selector, _pod_labels(d))]


def _container_port(deployment: dict[str, Any], port: int | str) -> int:
    """A port (number or name) as a container port of the deployment's pods; fails if none."""
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        for declared in container.get("ports", []):
            if port in (declared["containerPort"], declared.get("name")):
                number: int = declared["containerPort"]
                return number
    raise AssertionError(f"{deployment['metadata']['name']} declares no port {port!r}")


def _policy_for(deployment: dict[str, Any]) -> dict[str, Any]:
    """The spec of the one NetworkPolicy that selects the deployment's pods."""
    (policy,) = [
        p for p in _all("NetworkPolicy")
        if _selected(p["spec"]["podSelector"]["matchLabels"]) == [deployment]
    ]  # fmt: skip
    spec: dict[str, Any] = policy["spec"]
    return spec


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container["env"]}


# --- the bundle and its validity ----------------------------------------------------------------


def test_the_bundle_is_every_manifest_and_the_generated_secret() -> None:
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    on_disk = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk  # no manifest left out of `kubectl apply -k`
    kinds = sorted(o["kind"] for o in BUNDLE)
    assert kinds == sorted(
        ["ConfigMap"] * 2 + ["Deployment"] * 2 + ["Service"] * 2 + ["NetworkPolicy"] * 2
        + ["HorizontalPodAutoscaler", "PodDisruptionBudget", "Ingress", "Secret"]
    )  # fmt: skip


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    "obj", BUNDLE, ids=lambda o: f"{o['kind']}/{o['metadata']['name'].rsplit('-', 1)[0]}"
)
def test_every_object_is_valid_kubernetes(obj: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(obj, version, strict=True)


def test_validation_bites_on_a_wrong_field() -> None:
    doc = yaml.safe_load((K8S / "deployment.yaml").read_text())
    doc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/x"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, VERSIONS[-1], strict=True)


def test_the_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\nnamePrefix: x-\n")
    with pytest.raises(ValueError, match="namePrefix"):
        render_kustomization(tmp_path, {})


# --- secrets: never a placeholder ---------------------------------------------------------------


def test_the_bundle_applies_no_placeholder_secret() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        kinds = {d["kind"] for d in yaml.safe_load_all((K8S / resource).read_text()) if d}
        assert "Secret" not in kinds, resource
    (generator,) = kustomization["secretGenerator"]
    paths = [entry.partition("=")[2] for entry in generator["files"]]
    assert paths == ["secrets/useapi_token", "secrets/redis_password", "secrets/mirror_password"]
    # The files are ignored by git, and none is in the repository.
    ignored = subprocess.run(
        ["git", "-C", str(K8S), "check-ignore", *paths], capture_output=True, text=True, check=False
    )
    assert ignored.stdout.split() == paths, ignored
    tracked = subprocess.run(
        ["git", "-C", str(K8S), "ls-files", "secrets"], capture_output=True, text=True, check=True
    )
    assert tracked.stdout.split() == ["secrets/.gitignore"]


def test_without_the_secret_files_the_apply_fails_before_anything(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="secrets/redis_password"):
        render_kustomization(files={"secrets/useapi_token": b"t"})
    empty = tmp_path / "k8s"
    empty.mkdir()
    for path in K8S.glob("*.yaml"):
        (empty / path.name).write_bytes(path.read_bytes())
    with pytest.raises(FileNotFoundError, match="useapi_token"):
        render_kustomization(empty)


def test_both_deployments_mount_the_generated_secret_and_read_it_as_files() -> None:
    secret = _one("Secret", "music-facade-secrets")
    assert set(secret["data"]) == {"useapi_token", "redis_password", "mirror_password"}
    assert base64.b64decode(secret["data"]["useapi_token"]) == SECRET_FILES["secrets/useapi_token"]
    for name in ("music-facade", "music-facade-redis"):
        volumes = [v["secret"] for v in _pod(name)["volumes"] if "secret" in v]
        assert [v["secretName"] for v in volumes] == [secret["metadata"]["name"]], name
        for volume in volumes:
            assert {i["key"] for i in volume.get("items", [])} <= set(secret["data"])
    # The service: the token and the Redis password as files under the secret's mount.
    container = _container()
    env = _env(container)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert env["USEAPI_TOKEN_FILE"] == f"{mounts['secrets']}/useapi_token"
    assert env["MUSIC_REDIS_PASSWORD_FILE"] == f"{mounts['secrets']}/redis_password"
    assert env["MUSIC_MIRROR_PASSWORD_FILE"] == f"{mounts['secrets']}/mirror_password"
    assert "USEAPI_TOKEN" not in env  # the token only as a file
    assert not any("secretKeyRef" in e.get("valueFrom", {}) for e in container["env"])


# --- internal consistency -----------------------------------------------------------------------


def test_every_service_selects_one_deployment_on_a_port_its_pods_declare() -> None:
    for service in _all("Service"):
        spec = service["spec"]
        (deployment,) = _selected(spec["selector"])  # exactly one: no Service spans both
        for port in spec["ports"]:
            _container_port(deployment, port["targetPort"])
    assert _selected(_one("Service", "music-facade")["spec"]["selector"]) == [_deployment()]


def test_every_deployment_selector_matches_its_own_pods_only() -> None:
    for deployment in _all("Deployment"):
        assert _selected(deployment["spec"]["selector"]["matchLabels"]) == [deployment]


def test_every_probe_asks_a_port_the_container_declares() -> None:
    for deployment in _all("Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                action = container.get(probe, {})
                for kind in ("httpGet", "tcpSocket"):
                    if kind in action:
                        _container_port(deployment, action[kind]["port"])


def test_every_network_policy_selects_a_deployment_and_admits_its_declared_ports() -> None:
    for policy in _all("NetworkPolicy"):
        spec = policy["spec"]
        (deployment,) = _selected(spec["podSelector"]["matchLabels"])
        for rule in spec["ingress"]:
            assert rule["from"], policy["metadata"]["name"]  # no rule admits everyone
            for port in rule["ports"]:
                _container_port(deployment, port["port"])


def test_the_replicas_admit_the_ingress_controller_and_the_monitoring_namespace() -> None:
    spec = _policy_for(_deployment())
    assert spec["policyTypes"] == ["Ingress"]
    peers = {}
    for rule in spec["ingress"]:
        (peer,) = rule["from"]
        namespace = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        assert "podSelector" in peer  # that namespace's controller / Prometheus pods only
        peers[namespace] = [_container_port(_deployment(), p["port"]) for p in rule["ports"]]
    metrics_port = _scrape_port()
    assert peers == {"ingress-nginx": [8080], "monitoring": [metrics_port]}


def test_only_the_replicas_reach_redis_and_redis_reaches_nothing() -> None:
    redis_deployment = _deployment("music-facade-redis")
    spec = _policy_for(redis_deployment)
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["egress"] == []
    (rule,) = spec["ingress"]
    (peer,) = rule["from"]
    assert set(peer) == {"podSelector"}  # this namespace only
    assert _selected(peer["podSelector"]["matchLabels"]) == [_deployment()]
    assert [_container_port(redis_deployment, p["port"]) for p in rule["ports"]] == [6379]


def test_the_hpa_and_pdb_target_the_service_deployment() -> None:
    hpa = _one("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (hpa["apiVersion"], hpa["kind"], hpa["name"]) == (
        "apps/v1",
        "Deployment",
        "music-facade",
    )
    pdb = _one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"]
    assert _selected(pdb) == [_deployment()]


def test_music_redis_url_names_the_bundles_redis_service() -> None:
    url = urlsplit(_env(_container())["MUSIC_REDIS_URL"])
    assert url.scheme == "redis"
    assert url.password is None  # the password comes from its file, never the URL
    service = _one("Service", url.hostname)
    assert service["metadata"]["name"] == url.hostname
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == url.port]
    (deployment,) = _selected(service["spec"]["selector"])
    assert deployment["metadata"]["name"] == "music-facade-redis"
    assert _container_port(deployment, port["targetPort"]) == 6379


def test_the_ingress_reaches_the_service_port_with_nginx_confs_timeouts() -> None:
    ingress = _one("Ingress")
    spec = ingress["spec"]
    assert spec["ingressClassName"] == "nginx"
    (rule,) = spec["rules"]
    assert [t["hosts"] for t in spec["tls"]] == [[rule["host"]]]
    (path,) = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/", "Prefix")
    backend = path["backend"]["service"]
    service = _one("Service", backend["name"])
    assert service["metadata"]["name"] == backend["name"]
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    # The edge behaves as deploy/nginx/nginx.conf does.
    prefix = "nginx.ingress.kubernetes.io/"
    notes = {k.removeprefix(prefix): v for k, v in ingress["metadata"]["annotations"].items()}
    conf = "\n".join(line.split("#", 1)[0] for line in NGINX_TEMPLATE.read_text().splitlines())

    def nginx(directive: str) -> str:
        (value,) = re.findall(rf"^\s*{directive}\s+([^;]+);", conf, re.MULTILINE)
        return str(value)

    assert notes["proxy-read-timeout"] + "s" == nginx("proxy_read_timeout")
    assert notes["proxy-send-timeout"] + "s" == nginx("proxy_send_timeout")
    assert notes["proxy-connect-timeout"] + "s" == nginx("proxy_connect_timeout")
    assert notes["proxy-next-upstream"] == nginx("proxy_next_upstream")
    assert notes["proxy-next-upstream-tries"] == nginx("proxy_next_upstream_tries")
    assert notes["proxy-next-upstream-timeout"] + "s" == nginx("proxy_next_upstream_timeout")
    assert notes["proxy-body-size"] == nginx("client_max_body_size")
    assert notes["proxy-buffering"] == "off"  # /library streams


# --- the Prometheus scrape job: one target per pod, on a port the pod declares -------------------


def _scrape_job() -> dict[str, Any]:
    (job,) = yaml.safe_load(SCRAPE.read_text())["scrape_configs"]
    assert isinstance(job, dict)
    return job


def _meta_labels(
    deployment: dict[str, Any], container: dict[str, Any], port: dict[str, Any]
) -> dict[str, str]:
    """What Prometheus's pod discovery attaches to the target of one declared container port."""
    labels = {
        f"__meta_kubernetes_pod_label_{re.sub('[^a-zA-Z0-9_]', '_', k)}": v
        for k, v in _pod_labels(deployment).items()
    }
    return labels | {
        "__meta_kubernetes_namespace": "default",
        "__meta_kubernetes_pod_name": deployment["metadata"]["name"] + "-abc12-xyz34",
        "__meta_kubernetes_pod_phase": "Running",
        "__meta_kubernetes_pod_container_name": container["name"],
        "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
        "__meta_kubernetes_pod_container_port_number": str(port["containerPort"]),
    }


def _kept(labels: dict[str, str]) -> bool:
    """Whether the job's keep/drop rules keep a target (Prometheus: values joined by ';',
    the regex anchored at both ends)."""
    for rule in _scrape_job()["relabel_configs"]:
        action = rule.get("action", "replace")
        if action not in ("keep", "drop"):
            continue
        value = rule.get("separator", ";").join(labels.get(s, "") for s in rule["source_labels"])
        matched = re.fullmatch(rule["regex"], value) is not None
        if matched != (action == "keep"):
            return False
    return True


def _targets() -> list[tuple[str, int]]:
    """(deployment, container port) of every target the job keeps from the bundle's pods."""
    return [
        (deployment["metadata"]["name"], port["containerPort"])
        for deployment in _all("Deployment")
        for container in deployment["spec"]["template"]["spec"]["containers"]
        for port in container.get("ports", [])
        if _kept(_meta_labels(deployment, container, port))
    ]


def _scrape_port() -> int:
    ((deployment, port),) = _targets()
    assert deployment == "music-facade"
    return port


def test_the_scrape_job_keeps_one_target_per_service_pod_on_its_http_port() -> None:
    job = _scrape_job()
    assert [c["role"] for c in job["kubernetes_sd_configs"]] == ["pod"]  # not the Service
    assert job["metrics_path"] == "/metrics"
    assert _targets() == [("music-facade", 8080)]
    # ... and the probes agree that the port serves the service itself.
    assert _container()["readinessProbe"]["httpGet"]["port"] == "http"
    # A pod that is not running is not scraped.
    deployment, container = _deployment(), _container()
    finished = _meta_labels(deployment, container, container["ports"][0])
    assert not _kept(finished | {"__meta_kubernetes_pod_phase": "Succeeded"})


def test_the_scrape_job_check_bites() -> None:
    deployment, container = _deployment(), _container()
    renamed = container["ports"][0] | {"name": "web"}
    assert not _kept(_meta_labels(deployment, container, renamed))
    relabelled = _meta_labels(deployment, container, container["ports"][0])
    relabelled["__meta_kubernetes_pod_label_app_kubernetes_io_name"] = "music"
    assert not _kept(relabelled)


def _static_job() -> tuple[dict[str, Any], dict[str, tuple[str, int]]]:
    """The job with pod discovery replaced by static targets carrying the labels it would
    attach (Debian's Prometheus has no Kubernetes discovery): one target per declared port of
    the bundle's pods, each at a loopback address of its own. Also address → (deployment,
    port)."""
    job = {k: v for k, v in _scrape_job().items() if k != "kubernetes_sd_configs"}
    job["scrape_interval"] = "1h"  # relabelling is what is checked, not the scrape
    job["static_configs"] = []
    addresses: dict[str, tuple[str, int]] = {}
    for deployment in _all("Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            for port in container.get("ports", []):
                address = f"127.0.0.{len(addresses) + 2}:{port['containerPort']}"
                addresses[address] = (deployment["metadata"]["name"], port["containerPort"])
                labels = _meta_labels(deployment, container, port)
                job["static_configs"].append({"targets": [address], "labels": labels})
    return job, addresses


def _prometheus_targets(
    config: Path, tmp_path: Path, done: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Runs a real Prometheus on config until its /api/v1/targets data satisfies done (60 s at
    most); returns that data."""
    prometheus = shutil.which("prometheus")
    promtool = shutil.which("promtool")
    if prometheus is None or promtool is None:
        missing_program("prometheus and promtool", "prometheus")
    check = subprocess.run(
        [promtool, "check", "config", str(config)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    listen = f"127.0.0.1:{free_port()}"
    with (tmp_path / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address={listen}",
            ],
            stdout=log,
            stderr=log,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                data: dict[str, Any] = requests.get(
                    f"http://{listen}/api/v1/targets", timeout=5
                ).json()["data"]
                if done(data):
                    return data
            except requests.RequestException:
                pass  # still starting
            assert proc.poll() is None, "prometheus exited"
            assert time.monotonic() < deadline, f"prometheus never got there: {data}"
            time.sleep(0.2)  # poll interval
    finally:
        proc.terminate()
        proc.wait(15)


@pytest.mark.live
def test_prometheus_itself_keeps_one_target_per_service_pod(tmp_path: Path) -> None:
    job, addresses = _static_job()
    token = tmp_path / "scrape-token"
    token.write_text("scrape-token\n")
    job["authorization"] = {"credentials_file": str(token)}
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"scrape_configs": [job]}))
    data = _prometheus_targets(
        config,
        tmp_path,
        lambda d: len(d["activeTargets"]) + len(d["droppedTargets"]) == len(addresses),
    )
    (active,) = data["activeTargets"]
    assert addresses[active["labels"]["instance"]] == ("music-facade", 8080)
    assert active["labels"]["pod"].startswith("music-facade-")
    assert active["labels"]["job"] == "music-facade"
    assert active["scrapeUrl"].endswith(":8080/metrics")


# --- the service Deployment's own choices -------------------------------------------------------


def test_grace_period_outlasts_prestop_and_gunicorn_graceful_timeout() -> None:
    pod = _pod()
    command = _container()["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = int(command[1])
    graceful = gunicorn_setting("graceful_timeout")
    assert pre_stop >= 5  # long enough for the endpoint removal to reach kube-proxy and ingress
    assert pod["terminationGracePeriodSeconds"] > pre_stop + graceful


def test_probes_ask_the_right_paths_on_the_container_port() -> None:
    container = _container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080}
    assert _env(container)["MUSIC_BIND"].rsplit(":", 1)[1] == "8080"
    paths = {
        probe: (container[probe]["httpGet"]["path"], container[probe]["httpGet"]["port"])
        for probe in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert paths == {
        "startupProbe": ("/healthz", "http"),
        "livenessProbe": ("/healthz", "http"),
        "readinessProbe": ("/readyz", "http"),
    }
    # Readiness reacts within one period: a pod shutting down leaves the endpoints fast.
    assert container["readinessProbe"]["failureThreshold"] == 1


def test_rollout_keeps_replicas_serving() -> None:
    spec = _deployment()["spec"]
    assert spec["replicas"] >= 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert _one("HorizontalPodAutoscaler")["spec"]["minReplicas"] >= 2
    assert _one("PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    # One Redis, replaced rather than doubled during a change.
    redis_spec = _deployment("music-facade-redis")["spec"]
    assert (redis_spec["replicas"], redis_spec["strategy"]["type"]) == (1, "Recreate")


@pytest.mark.parametrize("name", ["music-facade", "music-facade-redis"])
def test_security_context_is_non_root_with_a_read_only_root(name: str) -> None:
    pod = _pod(name)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert "memory" in container["resources"]["limits"]
    assert "requests" in container["resources"]


def test_the_service_runs_as_the_images_user_with_a_writable_tmp() -> None:
    pod = _pod()
    assert pod["securityContext"]["runAsUser"] == 10001  # the Dockerfile's USER
    assert "USER 10001:10001" in (REPO / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    mounts = {m["mountPath"]: m["name"] for m in _container()["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]  # noqa: S108 (a path inside the container)


def test_the_configmaps_toml_is_a_valid_configuration(tmp_path: Path) -> None:
    container = _container()
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in _pod()["volumes"]}
    configmap = _one("ConfigMap", "music-facade-config")
    assert volumes["config"]["configMap"]["name"] == configmap["metadata"]["name"]
    assert _env(container)["MUSIC_CONFIG"] == f"{mounts['config']}/music.toml"
    # With the Deployment's whole environment, its secret files being the generated Secret's.
    document = tomllib.loads(configmap["data"]["music.toml"])
    settings = parse_settings(document, _local_env(tmp_path))
    assert settings.proxy_hops == 1  # behind the ingress controller
    assert settings.redis is not None
    assert settings.mirror is not None
    assert settings.mirror.password is not None
    password = SECRET_FILES["secrets/mirror_password"].decode().strip()
    assert settings.mirror.password.reveal() == password


def _local_env(tmp_path: Path) -> dict[str, str]:
    """The service container's environment with the generated Secret's files written under
    tmp_path, and every variable naming a file under the Secret's mount naming that copy."""
    container = _container()
    (mount,) = [m["mountPath"] for m in container["volumeMounts"] if m["name"] == "secrets"]
    local = tmp_path / "secrets"
    local.mkdir()
    for key, value in _one("Secret", "music-facade-secrets")["data"].items():
        (local / key).write_bytes(base64.b64decode(value))
    env = {}
    for name, value in _env(container).items():
        if value.startswith(f"{mount}/"):
            value = str(local / Path(value).relative_to(mount))
            assert Path(value).is_file(), f"{name} names no key of the Secret"
        env[name] = value
    return env


def test_the_mirror_database_is_wired_not_bundled() -> None:
    env = _env(_container())
    url = urlsplit(env["MUSIC_MIRROR_DATABASE_URL"])
    assert url.scheme == "postgresql"
    assert url.password is None  # the password only as a file, never in the Deployment
    assert "sslmode=" in url.query  # a managed database is reached over TLS
    # The bundle brings no PostgreSQL: the operator's own (docs/deployment.md says so).
    images = [
        c["image"] for d in _all("Deployment") for c in d["spec"]["template"]["spec"]["containers"]
    ]
    assert not any("postgres" in image for image in images), images
    assert {o["kind"] for o in BUNDLE}.isdisjoint({"StatefulSet", "PersistentVolumeClaim"})
    deployment_doc = (REPO / "docs" / "deployment.md").read_text(encoding="utf-8")
    assert "The bundle runs no PostgreSQL" in deployment_doc
    # The replicas may reach it: their NetworkPolicy leaves egress open.
    assert "Egress" not in _policy_for(_deployment())["policyTypes"]


def test_redis_settings_are_documented_and_in_its_configmap() -> None:
    text = (K8S / "redis.md").read_text(encoding="utf-8")
    assert "allkeys-lru" in text
    assert "maxmemory" in text
    conf = _one("ConfigMap", "music-facade-redis-config")["data"]["redis.conf"]
    settings = dict(line.split(" ", 1) for line in conf.splitlines() if line.strip())
    assert settings["maxmemory-policy"] == "allkeys-lru"
    assert (settings["save"], settings["appendonly"]) == ('""', "no")
    assert "requirepass" not in settings  # from the Secret, at start


# --- the bundle's Redis for real: its command, ConfigMap and password, then the service ----------


class BundleRedis:
    """The Redis container's command and readiness probe run here against a real redis-server:
    each mount path is a directory of the test's, and the port a free one."""

    def __init__(self, tmp: Path) -> None:
        require_redis_server()
        self.port = free_port()
        container = _container("music-facade-redis")
        (declared,) = container["ports"]
        self.declared = str(declared["containerPort"])
        volumes = {v["name"]: v for v in _pod("music-facade-redis")["volumes"]}
        secret = _one("Secret", "music-facade-secrets")
        configmaps = {c["metadata"]["name"]: c for c in _all("ConfigMap")}
        self.paths: dict[str, Path] = {}
        for mount in container["volumeMounts"]:
            local = tmp / mount["name"]
            local.mkdir(parents=True)
            self.paths[mount["mountPath"]] = local
            volume = volumes[mount["name"]]
            if "configMap" in volume:
                for key, text in configmaps[volume["configMap"]["name"]]["data"].items():
                    (local / key).write_text(self._local(text))
            elif "secret" in volume:
                for item in volume["secret"]["items"]:
                    (local / item["path"]).write_bytes(
                        base64.b64decode(secret["data"][item["key"]])
                    )
        self.command = [self._local(arg) for arg in container["command"]]
        self.probe = [self._local(arg) for arg in container["readinessProbe"]["exec"]["command"]]
        self.workdir = self.paths["/data"]
        self.proc: subprocess.Popen[bytes] | None = None

    def _local(self, text: str) -> str:
        """The container's paths and port, as they are on this machine."""
        for path, local in self.paths.items():
            text = text.replace(path, str(local))
        return re.sub(rf"\b{self.declared}\b", str(self.port), text)

    def ready(self) -> bool:
        """The readiness probe's verdict (its exit status)."""
        result = subprocess.run(self.probe, cwd=self.workdir, capture_output=True, timeout=10)
        return result.returncode == 0

    def __enter__(self) -> BundleRedis:
        self.proc = subprocess.Popen(
            self.command, cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 15
        while not self.ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"the bundle's redis exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("the bundle's redis never passed its readiness probe")
            time.sleep(0.05)  # poll interval
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def bundle_redis(tmp_path: Path) -> Iterator[BundleRedis]:
    with BundleRedis(tmp_path / "redis") as server:
        yield server


@pytest.mark.live
@pytest.mark.redis
def test_the_bundles_redis_starts_with_its_password_and_settings(bundle_redis: BundleRedis) -> None:
    password = SECRET_FILES["secrets/redis_password"].decode().strip()
    # No retries: redis-py retries an AuthenticationError (a ConnectionError) with backoff.
    once = Retry(NoBackoff(), 0)
    with (
        redis.Redis(port=bundle_redis.port, socket_timeout=2, retry=once) as anonymous,
        pytest.raises(redis.AuthenticationError),
    ):
        anonymous.ping()
    with redis.Redis(port=bundle_redis.port, password=password, socket_timeout=2) as client:
        assert client.ping()
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-lru"}
        assert client.config_get("maxmemory") == {"maxmemory": str(256 * 1024 * 1024)}
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
    # The readiness probe fails on a wrong password (it really authenticates).
    (secret_dir,) = [p for m, p in bundle_redis.paths.items() if m.startswith("/run/secrets")]
    (secret_dir / "redis_password").write_text("wrong\n")
    assert not bundle_redis.ready()


@pytest.mark.live
@pytest.mark.redis
def test_the_service_deployment_works_with_the_bundles_redis(
    bundle_redis: BundleRedis, sandbox: SandboxServer, postgres: PostgresServer, tmp_path: Path
) -> None:
    """The Deployment's env, the ConfigMap's TOML and the generated Secret, with only the
    addresses changed: the service reaches Redis (/readyz says ok, not degraded) with the
    mirror's database on a real PostgreSQL."""
    container = _container()
    mounts = {m["name"]: Path(m["mountPath"]) for m in container["volumeMounts"]}
    local = {"config": tmp_path / "config", "secrets": tmp_path / "secrets"}
    local["config"].mkdir()
    local["secrets"].mkdir()
    toml = _one("ConfigMap", "music-facade-config")["data"]["music.toml"]
    base_url = tomllib.loads(toml)["upstream"]["base_url"]
    (local["config"] / "music.toml").write_text(toml.replace(base_url, sandbox.base_url))
    secret = _one("Secret", "music-facade-secrets")
    for key, value in secret["data"].items():
        (local["secrets"] / key).write_bytes(base64.b64decode(value))
    (local["secrets"] / "useapi_token").write_text(sandbox.token)
    env: dict[str, str] = {}
    for name, value in _env(container).items():
        if name in ("MUSIC_BIND", "MUSIC_WORKERS"):
            continue  # GunicornProcess binds and sizes it
        for volume, mount in mounts.items():
            if volume in local and value.startswith(f"{mount}/"):
                value = str(local[volume] / Path(value).relative_to(mount))
        env[name] = value
    url = urlsplit(env["MUSIC_REDIS_URL"])
    env["MUSIC_REDIS_URL"] = url._replace(netloc=f"127.0.0.1:{bundle_redis.port}").geturl()
    # The mirror's database: a real PostgreSQL on loopback, with the URL's role and database
    # (and no TLS: the test server has none).
    url = urlsplit(env["MUSIC_MIRROR_DATABASE_URL"])
    local_url = url._replace(netloc=f"{url.username}@127.0.0.1:{postgres.port}", query="")
    env["MUSIC_MIRROR_DATABASE_URL"] = local_url.geturl()
    _create_role_and_database(postgres, url.username or "", url.path.lstrip("/"))
    # The scrape token: the bundle's digest stands for the operator's own.
    scrape_token = "bundle-scrape-token"
    digest = tomllib.loads(toml)["metrics"]["token_sha256"]
    scrape_digest = hashlib.sha256(scrape_token.encode()).hexdigest()
    (local["config"] / "music.toml").write_text(
        (local["config"] / "music.toml").read_text().replace(digest, scrape_digest)
    )
    with GunicornProcess(env, log_path=tmp_path / "gunicorn.log") as server:
        readyz = requests.get(server.url + "/readyz", timeout=10)
        closed = requests.get(server.url + "/metrics", timeout=10)
        scraped = _scraped_by_the_bundles_job(server.url, scrape_token, tmp_path)
    assert readyz.status_code == 200, readyz.text
    assert readyz.json()["checks"]["redis"] == "ok"
    # Keys are configured: closed to a caller without the token, open to Prometheus with it.
    assert (closed.status_code, closed.json()["code"]) == (403, "metrics_forbidden")
    assert scraped["health"] == "up", scraped


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


def _create_role_and_database(server: PostgresServer, role: str, database: str) -> None:
    """The role and database a managed PostgreSQL would have for the service (trust auth on
    loopback: the password file is sent and not needed)."""
    with psycopg.connect(server.url.replace("/music", "/postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
        command = (
            "ALTER DATABASE {} OWNER TO {}" if exists.fetchone() else "CREATE DATABASE {} OWNER {}"
        )
        conn.execute(sql.SQL(command).format(sql.Identifier(database), sql.Identifier(role)))


def _scraped_by_the_bundles_job(url: str, token: str, tmp_path: Path) -> dict[str, Any]:
    """The bundle's scrape job, pod discovery swapped for the one running service and its
    credentials_file for a local copy of the token, run by a real Prometheus until its first
    scrape: that target's state."""
    job = {
        k: v
        for k, v in _scrape_job().items()
        if k not in ("kubernetes_sd_configs", "relabel_configs")
    }
    assert job["authorization"]["credentials_file"]  # what the bundle tells Prometheus to send
    credentials = tmp_path / "scrape-token"
    credentials.write_text(token + "\n")
    job["authorization"] = {"credentials_file": str(credentials)}
    job["scrape_interval"] = "1s"
    job["static_configs"] = [{"targets": [urlsplit(url).netloc]}]
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"scrape_configs": [job]}))
    data = _prometheus_targets(
        config,
        tmp_path,
        lambda d: any(t["health"] != "unknown" for t in d["activeTargets"]),
    )
    (target,) = data["activeTargets"]
    return {"health": target["health"], "lastError": target["lastError"]}
