"""The package's import graph: no cycles, and a core that knows no web framework or server.

The graph is read from the sources (tests/support/import_graph.py), so imports under
TYPE_CHECKING or inside functions count; the core is also imported for real in a fresh
interpreter, which catches a framework pulled in by a third-party library as well.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.import_graph import ImportGraph, read_package

PACKAGE = Path(__file__).resolve().parents[2] / "music_facade"
CORE = "music_facade.core"
# What the core must never need: the web framework, its toolkit, the server and its workers.
FRAMEWORKS = frozenset({"flask", "werkzeug", "gunicorn", "gevent"})


@pytest.fixture(scope="module")
def graph() -> ImportGraph:
    return read_package(PACKAGE)


def core_modules(graph: ImportGraph) -> list[str]:
    return sorted(m for m in graph.internal if m == CORE or m.startswith(CORE + "."))


def cycle_report(graph: ImportGraph) -> str:
    return "\n".join(" -> ".join(cycle) for cycle in graph.cycles())


def framework_report(graph: ImportGraph, modules: list[str]) -> str:
    chains = [chain for m in modules for chain in graph.chains_to(m, FRAMEWORKS)]
    return "\n".join(" -> ".join(chain) for chain in chains)


def test_no_import_cycles(graph: ImportGraph) -> None:
    report = cycle_report(graph)
    assert not report, f"import cycles in the package:\n{report}"


def test_core_needs_no_framework(graph: ImportGraph) -> None:
    modules = core_modules(graph)
    assert len(modules) > 1, "music_facade.core has no modules"
    report = framework_report(graph, modules)
    assert not report, f"music_facade.core reaches a framework:\n{report}"


def test_core_loads_without_a_framework(graph: ImportGraph) -> None:
    modules = core_modules(graph)
    assert len(modules) > 1, "music_facade.core has no modules"
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(sorted({{m.partition('.')[0] for m in sys.modules}} & {set(FRAMEWORKS)!r}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]", f"importing music_facade.core loaded {done.stdout.strip()}"


# The checks on a made-up package: each kind of import they must see, and what they then say.


def write_package(root: Path, files: dict[str, str]) -> Path:
    for name, source in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return root / "pkg"


def test_a_cycle_hidden_under_type_checking_and_in_a_function_is_reported(
    tmp_path: Path,
) -> None:
    package = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": """
                from typing import TYPE_CHECKING
                if TYPE_CHECKING:
                    from .b import B
            """,
            "b.py": """
                def late():
                    from pkg import a
            """,
            "c.py": "import pkg.a\n",
        },
    )
    assert cycle_report(read_package(package)) == "pkg.a -> pkg.b -> pkg.a"


def test_relative_and_submodule_imports_resolve(tmp_path: Path) -> None:
    package = write_package(
        tmp_path,
        {
            "__init__.py": "NAME = 1\n",
            "top.py": "from . import NAME\nfrom .sub import deep\n",
            "sub/__init__.py": "from .. import top\n",
            "sub/deep.py": "from ..sub import other\nimport pkg.sub.other as o\nimport json\n",
            "sub/other.py": "from pkg import NAME\n",
        },
    )
    graph = read_package(package)
    assert graph.internal == {
        "pkg": set(),
        "pkg.top": {"pkg", "pkg.sub.deep"},
        "pkg.sub": {"pkg.top"},
        "pkg.sub.deep": {"pkg.sub.other"},
        "pkg.sub.other": {"pkg"},
    }
    assert graph.external["pkg.sub.deep"] == {"json"}
    # pkg.sub → pkg.top → pkg.sub.deep: no edge back, as a parent package is never one.
    assert cycle_report(graph) == ""


def test_a_framework_reached_through_another_module_is_reported(tmp_path: Path) -> None:
    package = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "core/__init__.py": "",
            "core/rules.py": "from ..helpers import helper\nimport re\n",
            "helpers.py": """
                def helper():
                    from werkzeug.http import parse_etags
            """,
        },
    )
    report = framework_report(read_package(package), ["pkg.core", "pkg.core.rules"])
    assert report == "pkg.core.rules -> pkg.helpers -> werkzeug"


SANDBOX = "music_facade.sandbox"
# The command line starts the sandbox for `music-facade demo` and `sandbox`; nothing else may
# reach it, so the fake upstream can never be on a production request's path.
SANDBOX_USERS = frozenset({"music_facade.__main__", "music_facade.demo"})


def test_only_the_command_line_reaches_the_sandbox(graph: ImportGraph) -> None:
    outside = [m for m in graph.internal if not (m == SANDBOX or m.startswith(SANDBOX + "."))]
    chains = [
        chain
        for m in sorted(outside)
        if m not in SANDBOX_USERS
        for target, chain in graph.reach(m).items()
        if target == SANDBOX or target.startswith(SANDBOX + ".")
    ]
    assert len(outside) > 10
    assert not chains, "production modules reach the sandbox:\n" + "\n".join(
        " -> ".join(chain) for chain in chains
    )


def test_the_service_without_a_mirror_loads_no_database_library(tmp_path: Path) -> None:
    # SQLAlchemy and the drivers add about 18 MB to each worker: only [mirror] pays for them.
    config = tmp_path / "music.toml"
    config.write_text('[upstream]\nbase_url = "http://127.0.0.1:9"\n[users]\nstudio = "1001"\n')
    script = (
        "import sys\n"
        "from music_facade import create_app\n"
        "create_app()\n"
        "print(sorted({m.partition('.')[0] for m in sys.modules} & {'sqlalchemy', 'psycopg'}))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "MUSIC_CONFIG": str(config), "USEAPI_TOKEN": "t" * 20}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"without [mirror] the app loaded {done.stdout.strip()}"
