"""deploy/k8s/: every manifest valid for Kubernetes (offline schemas), and the cross-checks.

The checks that matter for a rollout that drops nothing: the grace period outlasts preStop plus
gunicorn's graceful_timeout, the probes ask the right paths on the right port, and the Service,
NetworkPolicy and container agree on ports and labels.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from service.config import parse_settings

from .deploy_render import REPO, gunicorn_setting

K8S = REPO / "deploy" / "k8s"
MANIFESTS = sorted(K8S.glob("*.yaml"))
# The oldest Kubernetes these manifests claim to support, and the newest the schemas know.
VERSIONS = ["1.30", kubernetes_validate.latest_version()]


def _load(name: str) -> dict[str, Any]:
    docs = list(yaml.safe_load_all((K8S / name).read_text(encoding="utf-8")))
    assert len(docs) == 1, name
    doc = docs[0]
    assert isinstance(doc, dict)
    return doc


def _container() -> dict[str, Any]:
    containers = _load("deployment.yaml")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container = containers[0]
    assert isinstance(container, dict)
    return container


def test_every_kind_is_there() -> None:
    kinds = {_load(path.name)["kind"] for path in MANIFESTS}
    assert kinds == {
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Secret",
        "Service",
    }


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_valid_kubernetes(path: Path, version: str) -> None:
    kubernetes_validate.validate(_load(path.name), version, strict=True)


def test_validation_bites_on_a_wrong_field() -> None:
    doc = _load("deployment.yaml")
    doc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/x"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, VERSIONS[-1], strict=True)


def test_grace_period_outlasts_prestop_and_gunicorn_graceful_timeout() -> None:
    pod = _load("deployment.yaml")["spec"]["template"]["spec"]
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
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MUSIC_BIND"].rsplit(":", 1)[1] == "8080"
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
    spec = _load("deployment.yaml")["spec"]
    assert spec["replicas"] >= 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    hpa = _load("hpa.yaml")["spec"]
    assert hpa["scaleTargetRef"]["name"] == "music-facade"
    assert hpa["minReplicas"] >= 2
    assert _load("pdb.yaml")["spec"]["maxUnavailable"] == 1


def test_security_context_is_non_root_with_a_read_only_root() -> None:
    pod = _load("deployment.yaml")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the Dockerfile's USER
    assert "USER 10001:10001" in (REPO / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    container = _container()
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]  # noqa: S108 (a path inside the container)
    assert "limits" in container["resources"]
    assert "requests" in container["resources"]


def test_config_and_secrets_are_wired_and_the_toml_is_a_valid_configuration(
    tmp_path: Path,
) -> None:
    container = _container()
    env = {e["name"]: e.get("value") for e in container["env"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {
        v["name"]: v for v in _load("deployment.yaml")["spec"]["template"]["spec"]["volumes"]
    }
    configmap = _load("configmap.yaml")
    secret = _load("secret.yaml")
    assert volumes["config"]["configMap"]["name"] == configmap["metadata"]["name"]
    assert volumes["secrets"]["secret"]["secretName"] == secret["metadata"]["name"]
    assert env["MUSIC_CONFIG"] == f"{mounts['config']}/music.toml"
    assert env["USEAPI_TOKEN_FILE"] == f"{mounts['secrets']}/useapi_token"
    assert env["MUSIC_REDIS_PASSWORD_FILE"] == f"{mounts['secrets']}/redis_password"
    assert "USEAPI_TOKEN" not in env  # the token only as a file
    assert set(secret["stringData"]) == {"useapi_token", "redis_password"}
    assert all(v.startswith("REPLACE-WITH-") for v in secret["stringData"].values())
    # The ConfigMap's TOML is a configuration the service accepts.
    token = tmp_path / "useapi_token"
    token.write_text("placeholder-token\n")
    document = tomllib.loads(configmap["data"]["music.toml"])
    settings = parse_settings(document, {"USEAPI_TOKEN_FILE": str(token)})
    assert settings.proxy_hops == 1  # behind the ingress controller


def test_service_and_network_policy_reach_the_container_port() -> None:
    service = _load("service.yaml")["spec"]
    labels = _load("deployment.yaml")["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= labels.items()
    assert [p["targetPort"] for p in service["ports"]] == ["http"]
    policy = _load("networkpolicy.yaml")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    assert [p["port"] for p in rule["ports"]] == [8080]
    # Only the ingress controller's pods: no rule without a `from`.
    (peer,) = rule["from"]
    assert "namespaceSelector" in peer
    assert "podSelector" in peer


def test_redis_settings_are_documented() -> None:
    text = (K8S / "redis.md").read_text(encoding="utf-8")
    assert "allkeys-lru" in text
    assert "maxmemory" in text
