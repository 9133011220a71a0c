"""deploy/Dockerfile read as instructions per stage, so tests do what the image does, not a copy.

Only what the project's Dockerfile uses: line continuations, comments, `FROM ... AS name`,
COPY (without --from), ENV key=value pairs and exec-form (JSON) CMD and HEALTHCHECK CMD.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from .deploy_render import REPO

DOCKERFILE = REPO / "deploy" / "Dockerfile"


@dataclass(frozen=True)
class Copy:
    """One `COPY src... dest` of the build context (dest relative to the stage's WORKDIR)."""

    sources: tuple[str, ...]
    dest: str


@dataclass(frozen=True)
class Stage:
    name: str
    instructions: tuple[tuple[str, str], ...]  # (KEYWORD, rest of the line)

    def args(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]

    def copies(self) -> list[Copy]:
        """The stage's COPY lines from the build context (a COPY --from is another stage's)."""
        found = []
        for rest in self.args("COPY"):
            words = shlex.split(rest)
            if any(word.startswith("--from") for word in words):
                continue
            paths = [word for word in words if not word.startswith("--")]
            found.append(Copy(tuple(paths[:-1]), paths[-1]))
        return found

    def env(self) -> dict[str, str]:
        """Every ENV key=value of the stage."""
        words = (word for rest in self.args("ENV") for word in shlex.split(rest))
        return dict(word.split("=", 1) for word in words)

    def cmd(self) -> list[str]:
        """The stage's last CMD, which must be exec form (a JSON array)."""
        return exec_form(self.args("CMD")[-1])

    def healthcheck(self) -> list[str]:
        """The HEALTHCHECK's command (exec form), its options left out."""
        rest = self.args("HEALTHCHECK")[-1]
        return exec_form(rest.split(" CMD ", 1)[1])


def exec_form(text: str) -> list[str]:
    argv = json.loads(text)
    assert isinstance(argv, list), f"not exec form: {text}"
    assert all(isinstance(a, str) for a in argv), text
    return argv


def stages(path: Path = DOCKERFILE) -> dict[str, Stage]:
    """The Dockerfile's stages by name, each with its instructions in order."""
    logical: list[str] = []
    pending = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#") and not pending:
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        logical.append(pending + line.strip())
        pending = ""
    found: dict[str, Stage] = {}
    name = ""
    body: list[tuple[str, str]] = []
    for line in filter(None, logical):
        keyword, _, rest = line.partition(" ")
        if keyword.upper() == "FROM":
            if name:
                found[name] = Stage(name, tuple(body))
            match = re.search(r" AS (\w+)$", rest, re.IGNORECASE)
            assert match is not None, f"every stage is named: {line}"
            name, body = match.group(1), []
        elif name:
            body.append((keyword.upper(), rest.strip()))
    if name:
        found[name] = Stage(name, tuple(body))
    return found


def copy_context(copies: list[Copy], files: list[str], into: Path, root: Path = REPO) -> None:
    """Do the COPY lines with `files` (paths relative to root) as the build context.

    As Docker does: a directory's contents go into dest, a file into a dest ending in "/";
    symbolic links are copied as links, never followed (a dangling one stays dangling).
    """
    for copy in copies:
        assert not copy.dest.startswith("/"), f"{copy}: a dest relative to WORKDIR"
        dest = into / copy.dest
        for source in copy.sources:
            prefix = source.rstrip("/")
            chosen = [f for f in files if f == prefix or f.startswith(prefix + "/")]
            assert chosen, f"COPY {source}: nothing in the build context"
            for name in chosen:
                if name == prefix:  # a file: into a directory dest, or as dest itself
                    target = dest / Path(name).name if copy.dest.endswith("/") else dest
                else:  # a directory's contents
                    target = dest / Path(name).relative_to(prefix)
                target.parent.mkdir(parents=True, exist_ok=True)
                origin = root / name
                if origin.is_symlink():
                    target.symlink_to(origin.readlink())
                else:
                    shutil.copy2(origin, target)
