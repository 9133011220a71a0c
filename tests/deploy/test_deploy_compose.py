"""deploy/compose.yaml: valid against the Compose Specification's schema, and the fleet's shape:
nginx, two replicas, Redis, the mirror's PostgreSQL and the sandbox, each name and file one of
them gives another existing there.

Docker cannot run here, so the file is checked, not run: the schema is the one check-jsonschema
vendors from compose-spec (with its licence) and checks with `--builtin-schema
vendor.compose-spec`.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from music_facade.config import parse_settings
from tests.support.deploy_render import REPO, render_nginx_text

DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yaml"


def _compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def _check_schema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_compose_file_matches_the_compose_specification() -> None:
    result = _check_schema(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_bites(tmp_path: Path) -> None:
    doc = _compose()
    doc["services"]["music"]["depends_on"]["redis"]["condition"] = "service_ready"
    doc["services"]["nginx"]["restart_policy"] = "always"
    broken = tmp_path / "compose.yaml"
    broken.write_text(yaml.safe_dump(doc))
    result = _check_schema(broken)
    assert result.returncode != 0
    assert "service_ready" in result.stdout or "restart_policy" in result.stdout


def test_topology_nginx_two_replicas_redis_postgres_sandbox() -> None:
    services = _compose()["services"]
    assert set(services) == {"nginx", "music", "redis", "postgres", "sandbox"}
    assert services["music"]["deploy"]["replicas"] == 2
    # Only nginx is reachable from outside, and only on loopback.
    published = {name for name, s in services.items() if s.get("ports")}
    assert published == {"nginx"}
    assert services["nginx"]["ports"] == ["127.0.0.1:8080:8080"]
    depends = {name: s.get("depends_on", {}) for name, s in services.items()}
    assert depends["nginx"] == {"music": {"condition": "service_healthy"}}
    assert depends["music"] == {
        "redis": {"condition": "service_healthy"},
        "postgres": {"condition": "service_healthy"},
        "sandbox": {"condition": "service_healthy"},
    }
    for name in ("music", "redis", "postgres", "sandbox"):
        assert services[name]["healthcheck"]["test"][0] == "CMD", name
    assert services["music"]["healthcheck"]["test"][1:] == [
        "python",
        "deploy/healthcheck.py",
        "/healthz",
    ]
    # The sandbox runs from the service's own image.
    assert services["sandbox"]["image"] == services["music"]["image"]
    assert services["sandbox"]["command"][:3] == ["python", "-m", "music_facade.sandbox"]


def test_replicas_env_config_and_secret() -> None:
    doc = _compose()
    music = doc["services"]["music"]
    env = music["environment"]
    (config,) = music["configs"]
    assert env["MUSIC_CONFIG"] == config["target"]
    assert env["USEAPI_TOKEN_FILE"] == f"/run/secrets/{music['secrets'][0]}"
    assert "USEAPI_TOKEN" not in env
    assert env["MUSIC_REDIS_URL"] == "redis://redis:6379/0"
    assert music["read_only"] is True
    assert "/tmp" in music["tmpfs"]  # noqa: S108 (a path inside the container)
    # Docker waits longer than gunicorn's graceful_timeout (20 s) before SIGKILL.
    assert music["stop_grace_period"] == "30s"
    # The files it names exist, and together they are a configuration the service accepts.
    toml_path = DEPLOY / doc["configs"][config["source"]]["file"]
    settings = parse_settings(
        tomllib.loads(toml_path.read_text(encoding="utf-8")), _local_environment(doc, music)
    )
    assert settings.upstream.base_url == "http://sandbox:8081/v1/tempolor"
    assert settings.upstream.token.reveal() == "sandbox-token"
    assert settings.proxy_hops == 1
    assert settings.mirror is not None
    assert settings.mirror.dialect == "postgresql"
    assert settings.mirror.password is not None
    assert settings.mirror.password.reveal() == "local-fleet-mirror-password"


def _local_environment(doc: dict[str, Any], service: dict[str, Any]) -> dict[str, str]:
    """The service's environment, each /run/secrets/<name> path as that secret's local file."""
    env: dict[str, str] = {}
    for name, value in service["environment"].items():
        secret = value.removeprefix("/run/secrets/")
        if secret != value:
            assert secret in service["secrets"], name  # mounted where the variable says
            value = str(DEPLOY / doc["secrets"][secret]["file"])
        env[name] = value
    return env


def test_the_mirror_database_is_the_postgres_service() -> None:
    doc = _compose()
    services = doc["services"]
    music, postgres = services["music"], services["postgres"]
    url = urlsplit(music["environment"]["MUSIC_MIRROR_DATABASE_URL"])
    assert url.scheme == "postgresql"
    assert url.password is None  # the password only as a file
    # The URL names the service, its port, the role and the database the image creates.
    assert url.hostname in services
    assert services[url.hostname] is postgres
    assert postgres["image"].startswith(("postgres:15", "postgres:16"))
    assert url.port == 5432
    assert url.username == postgres["environment"]["POSTGRES_USER"]
    assert url.path == "/" + postgres["environment"]["POSTGRES_DB"]
    # Both read one secret: the image sets the password from it, the service sends it.
    password_file = music["environment"]["MUSIC_MIRROR_PASSWORD_FILE"]
    assert postgres["environment"]["POSTGRES_PASSWORD_FILE"] == password_file
    secret = password_file.removeprefix("/run/secrets/")
    assert secret in music["secrets"]
    assert secret in postgres["secrets"]
    assert (DEPLOY / doc["secrets"][secret]["file"]).read_text(encoding="utf-8").strip()
    assert "POSTGRES_PASSWORD" not in postgres["environment"]  # never in the environment
    # Its readiness is checked over TCP, as the role and database the service uses.
    test = postgres["healthcheck"]["test"]
    assert test[:2] == ["CMD", "pg_isready"]
    options = dict(zip(test[2::2], test[3::2], strict=True))
    assert options == {"-h": "127.0.0.1", "-U": url.username, "-d": url.path[1:]}
    # The data lives in a named volume at the image's data directory.
    (volume,) = postgres["volumes"]
    name, target = volume.split(":")
    assert name in doc["volumes"]
    assert target == "/var/lib/postgresql/data"
    # Only the fleet's network reaches it: no published port.
    assert "ports" not in postgres
    assert postgres["networks"] == ["fleet"] == music["networks"]


def test_redis_is_a_bounded_lru_cache() -> None:
    command = _compose()["services"]["redis"]["command"]
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options["--maxmemory-policy"] == "allkeys-lru"
    assert options["--maxmemory"].endswith("mb")
    assert options["--appendonly"] == "no"


def test_nginx_renders_the_same_template_for_the_replicas() -> None:
    nginx = _compose()["services"]["nginx"]
    env = nginx["environment"]
    assert env["NGINX_ENVSUBST_OUTPUT_DIR"] == "/etc/nginx"
    (volume,) = nginx["volumes"]
    source, target, mode = volume.split(":")
    assert (DEPLOY / source).resolve() == (DEPLOY / "nginx" / "nginx.conf").resolve()
    assert target == "/etc/nginx/templates/nginx.conf.template"
    assert mode == "ro"
    # What envsubst will produce is what the renderer produces for one address.
    text = render_nginx_text(
        (DEPLOY / source).read_text(encoding="utf-8"),
        env["MUSIC_LISTEN"],
        [env["MUSIC_REPLICA"]],
        Path("/var/cache/nginx"),
    )
    assert "server music:8080 max_fails=0;" in text
    assert "listen 8080;" in text
    # The replicas believe X-Forwarded-For from nginx's fixed address only.
    address = nginx["networks"]["fleet"]["ipv4_address"]
    toml = tomllib.loads((DEPLOY / "compose" / "music.toml").read_text(encoding="utf-8"))
    assert toml["server"]["trusted_proxies"] == [f"{address}/32"]
