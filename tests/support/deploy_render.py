"""Render the deploy files for a run on this machine: the deploy tests and the fleet test.

deploy/nginx/nginx.conf is a template (its header comment names the placeholders):
`${MUSIC_LISTEN}` becomes the listen address, the line holding `${MUSIC_REPLICA}` is repeated
once per replica address, and nginx's pid and temporary paths are pointed into a directory of
the caller's, so nginx runs (or `nginx -t` checks it) without touching /run or /var/lib/nginx.

deploy/k8s/kustomization.yaml is rendered as `kubectl apply -k` would (no kubectl here): its
resources, plus the Secrets its secretGenerator makes, with the references to them renamed.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import runpy
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
NGINX_TEMPLATE = REPO / "deploy" / "nginx" / "nginx.conf"
K8S = REPO / "deploy" / "k8s"
GUNICORN_CONF = REPO / "deploy" / "gunicorn.conf.py"
LISTEN = "${MUSIC_LISTEN}"
REPLICA = "${MUSIC_REPLICA}"
_TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
# The file of allowed origins the template's CORS map includes (beside nginx.conf).
CORS_MAP = "music-cors-origins.map"
# What may stand in that file: a scheme, a host and a port, nothing nginx would parse.
_ORIGIN_RE = re.compile(r"\Ahttps?://[A-Za-z0-9.-]+(:[0-9]{1,5})?\Z")


@dataclass(frozen=True)
class RenderedNginx:
    """A rendered configuration in its own directory, and the command line that uses it."""

    conf: Path
    prefix: Path

    def command(self, *extra: str) -> list[str]:
        """nginx's argv for this configuration (add "-t" to check it, "-g", "daemon off;" …)."""
        binary = nginx_binary()
        if binary is None:
            raise FileNotFoundError("nginx is not installed")
        pid = self.prefix / "nginx.pid"
        return [binary, "-p", str(self.prefix), "-c", str(self.conf), "-g", f"pid {pid};", *extra]


def nginx_binary() -> str | None:
    """The nginx executable, if any (Debian installs it in /usr/sbin, often not on PATH)."""
    return shutil.which("nginx") or shutil.which("nginx", path=os.pathsep.join(["/usr/sbin"]))


def render_nginx_text(template: str, listen: str, replicas: Sequence[str], prefix: Path) -> str:
    """The template with its placeholders filled in and its temporary paths under prefix."""
    if not replicas:
        raise ValueError("at least one replica address is needed")
    directives = [line for line in template.splitlines() if not line.lstrip().startswith("#")]
    if sum(REPLICA in line for line in directives) != 1 or not any(
        LISTEN in line for line in directives
    ):
        raise ValueError(f"the template must hold {LISTEN} and exactly one {REPLICA} line")
    lines: list[str] = []
    for line in template.splitlines(keepends=True):
        if line.lstrip().startswith("#"):
            lines.append(line)  # the header names the placeholders; leave it as it is
        elif REPLICA in line:
            lines.extend(line.replace(REPLICA, address) for address in replicas)
        elif line.strip() == "http {":
            # nginx's compiled-in temporary paths need root; these are the caller's.
            lines.append(line)
            lines.extend(
                f"    {name}_temp_path {prefix / 'temp' / name};\n" for name in _TEMP_PATHS
            )
        else:
            lines.append(line.replace(LISTEN, listen))
    return "".join(lines)


def nginx_cors_map(origins: Sequence[str]) -> str:
    """The lines of music-cors-origins.map allowing these origins (the service's [cors])."""
    for origin in origins:
        if not _ORIGIN_RE.match(origin):
            raise ValueError(f"not an origin nginx's map may hold: {origin!r}")
    return "".join(f'"{origin}" $http_origin;\n' for origin in origins)


def render_nginx(
    directory: Path,
    listen: str,
    replicas: Sequence[str],
    template: Path = NGINX_TEMPLATE,
    cors_origins: Sequence[str] = (),
) -> RenderedNginx:
    """Write deploy/nginx/nginx.conf rendered for these addresses into directory.

    cors_origins, when given, are written to music-cors-origins.map beside it.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "temp").mkdir(exist_ok=True)
    (directory / "logs").mkdir(exist_ok=True)  # nginx -t opens prefix/logs/error.log first
    conf = directory / "nginx.conf"
    text = render_nginx_text(template.read_text(encoding="utf-8"), listen, replicas, directory)
    conf.write_text(text, encoding="utf-8")
    if cors_origins:
        (directory / CORS_MAP).write_text(nginx_cors_map(cors_origins), encoding="utf-8")
    return RenderedNginx(conf=conf, prefix=directory)


@contextlib.contextmanager
def running_nginx(
    rendered: RenderedNginx, listen: str, log: Path, timeout: float = 20
) -> Iterator[subprocess.Popen[bytes]]:
    """nginx in the foreground on a rendered configuration, until it accepts on listen.

    Readiness is a TCP connect, not a request: the tests that use this may have no replica
    behind it. Stopped (and waited for) on exit.
    """
    host, port = listen.rsplit(":", 1)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            rendered.command("-g", "daemon off;"), stdout=out, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"nginx exited with status {proc.returncode}")
                try:
                    socket.create_connection((host, int(port)), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("nginx did not listen in time") from None
                    time.sleep(0.05)  # poll interval
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def nginx_check(rendered: RenderedNginx) -> subprocess.CompletedProcess[str]:
    """Run `nginx -t` on a rendered configuration (its output is in stderr)."""
    return subprocess.run(
        rendered.command("-t"), capture_output=True, text=True, timeout=30, check=False
    )


def gunicorn_setting(name: str) -> int:
    """A numeric setting of deploy/gunicorn.conf.py (timeouts other deploy files must match)."""
    value = runpy.run_path(str(GUNICORN_CONF))[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} in {GUNICORN_CONF} is not a number: {value!r}")
    return int(value)


# What the renderer implements of a kustomization; anything else is refused, not ignored.
_KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "secretGenerator"}
_GENERATOR_KEYS = {"name", "type", "files", "options"}


def render_kustomization(
    directory: Path = K8S, files: dict[str, bytes] | None = None
) -> list[dict[str, Any]]:
    """The objects `kubectl apply -k directory` would apply, in resource order, Secrets last.

    files: the secretGenerator's files by their path in the kustomization (the real ones are
    never in the repository); None reads them from disk. A missing file raises, as kustomize
    does. Like kustomize, a generated Secret is named after its content (name-<hash>; the hash
    is this renderer's, not kustomize's) and every reference to it in a pod template follows.
    """
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text("utf-8"))
    unknown = set(kustomization) - _KUSTOMIZATION_KEYS
    if unknown:
        raise ValueError(f"the renderer does not implement {sorted(unknown)}")
    objects: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        text = (directory / resource).read_text(encoding="utf-8")
        objects += [doc for doc in yaml.safe_load_all(text) if doc is not None]
    renamed: dict[str, str] = {}
    for generator in kustomization.get("secretGenerator", []):
        unknown = set(generator) - _GENERATOR_KEYS
        if unknown:
            raise ValueError(f"the renderer does not implement {sorted(unknown)}")
        data: dict[str, str] = {}
        for entry in generator["files"]:
            key, _, path = entry.partition("=")
            path = path or key
            content = (directory / path).read_bytes() if files is None else files[path]
            data[Path(key).name] = base64.b64encode(content).decode("ascii")
        digest = hashlib.sha256(yaml.safe_dump(data, sort_keys=True).encode()).hexdigest()
        name = f"{generator['name']}-{digest[:10]}"
        renamed[generator["name"]] = name
        metadata: dict[str, Any] = {"name": name}
        labels = generator.get("options", {}).get("labels")
        if labels:
            metadata["labels"] = labels
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "data": data}
        objects.append(secret | {"type": generator.get("type", "Opaque")})
    for obj in objects:
        pod = obj.get("spec", {}).get("template", {}).get("spec")
        if pod is not None:
            _rename_secret_references(pod, renamed)
    return objects


def _rename_secret_references(pod: dict[str, Any], renamed: dict[str, str]) -> None:
    """Point a pod template's secret volumes, secretKeyRefs and secretRefs at generated names."""
    for volume in pod.get("volumes", []):
        if "secret" in volume:
            name = volume["secret"]["secretName"]
            volume["secret"]["secretName"] = renamed.get(name, name)
    for container in pod.get("initContainers", []) + pod.get("containers", []):
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref is not None:
                ref["name"] = renamed.get(ref["name"], ref["name"])
        for source in container.get("envFrom", []):
            ref = source.get("secretRef")
            if ref is not None:
                ref["name"] = renamed.get(ref["name"], ref["name"])
