"""The manual (README.md, docs/, CONTRIBUTING.md, CHANGELOG.md) stays true to the repository.

Every relative link leads to a file of the repository and every anchor to a heading (GitHub's
slugs); every key of the configuration schema (music_facade/config.py) has a row in
docs/configuration.md, and no row names a key the schema does not have; and no page carries a
note about how the work was organised ("issue 12", "this round") instead of the product.
Markdown is read with markdown-it-py (CommonMark), so code blocks and inline code are never
mistaken for links.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from markdown_it import MarkdownIt
from markdown_it.token import Token
from marshmallow import Schema, fields

from music_facade.config import _FileSchema  # the settings schema is the source of every key
from music_facade.core.problems import PROBLEMS

ROOT = Path(__file__).resolve().parents[2]
CONFIG_PAGE = ROOT / "docs" / "configuration.md"
MD = MarkdownIt("commonmark").enable("table")


def pages(root: Path = ROOT) -> list[Path]:
    """The manual's pages: README.md, CONTRIBUTING.md, CHANGELOG.md, docs/**/*.md, and the notes
    beside the deploy files (deploy/**/*.md)."""
    top = [root / name for name in ("README.md", "CONTRIBUTING.md", "CHANGELOG.md")]
    found = [p for p in top if p.exists()]
    return found + sorted((root / "docs").rglob("*.md")) + sorted((root / "deploy").rglob("*.md"))


def _inline_text(token: Token) -> str:
    """The text of an inline token as GitHub slugs it: text and inline code, no markup."""
    return "".join(
        child.content for child in token.children or [] if child.type in ("text", "code_inline")
    )


def slug(text: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, each space a hyphen."""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor GitHub makes for the headings of a Markdown text (repeats get -1, -2 …)."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    tokens = MD.parse(text)
    for i, token in enumerate(tokens):
        if token.type != "heading_open":
            continue
        base = slug(_inline_text(tokens[i + 1]))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def _links(text: str) -> Iterator[str]:
    """Every link and image target of a Markdown text."""
    for token in MD.parse(text):
        for child in token.children or []:
            if child.type == "link_open":
                yield str(child.attrs["href"])
            elif child.type == "image":
                yield str(child.attrs["src"])


def link_problems(files: list[Path], root: Path = ROOT) -> list[str]:
    """One line per link that leaves the repository, names a missing file or a missing anchor."""
    problems = []
    for page in files:
        where = page.relative_to(root)
        for href in _links(page.read_text(encoding="utf-8")):
            if re.match(r"[a-z][a-z0-9+.-]*:", href, re.IGNORECASE):
                continue  # a URL with a scheme: not a file of the repository
            path, _, anchor = href.partition("#")
            target = (page.parent / path).resolve() if path else page
            if not target.is_relative_to(root):
                problems.append(f"{where}: {href} leads outside the repository")
            elif not target.exists():
                problems.append(f"{where}: {href} names no file")
            elif (
                anchor
                and target.suffix == ".md"
                and anchor not in anchors(target.read_text(encoding="utf-8"))
            ):
                problems.append(f"{where}: {href} names no heading of {target.name}")
    return problems


def schema_keys(schema: Schema, section: str = "") -> set[tuple[str, str]]:
    """Every (section, key) a configuration file may hold: `[a]`, `[[a]]` and `[a.b]` sections
    from nested schemas, "" for the top level; a free-form table (a Dict) is one key."""
    found: set[tuple[str, str]] = set()
    for name, field in schema.fields.items():
        key = field.data_key or name
        if isinstance(field, fields.Nested) and isinstance(field.schema, Schema):
            path = f"{section.strip('[]')}.{key}" if section else key
            found |= schema_keys(field.schema, f"[{path}]")
        elif isinstance(field, fields.List) and isinstance(field.inner, fields.Nested):
            assert isinstance(field.inner.schema, Schema)
            path = f"{section.strip('[]')}.{key}" if section else key
            found |= schema_keys(field.inner.schema, f"[[{path}]]")
        else:
            found.add((section, key))
    return found


_SECTION_RE = re.compile(r"\A\[\[?[A-Za-z0-9_.]+\]\]?\Z")


def documented_keys(text: str) -> set[tuple[str, str]]:
    """The (section, key) rows of every `| key | default | meaning |` table: the section is the
    code span like `[upstream]` in the heading above the table ("" when it has none)."""
    found: set[tuple[str, str]] = set()
    section = ""
    tokens = MD.parse(text)
    for i, token in enumerate(tokens):
        if token.type == "heading_open":
            codes = [c.content for c in tokens[i + 1].children or [] if c.type == "code_inline"]
            section = next((c for c in codes if _SECTION_RE.match(c)), "")
        elif token.type == "table_open":
            found |= {(section, key) for key in _key_column(tokens[i:])}
    return found


def _key_column(tokens: list[Token]) -> Iterator[str]:
    """The code spans of the first column of the table the tokens start with, if its first
    header is `key`."""
    header: str | None = None
    first_cell = False
    for i, token in enumerate(tokens):
        if token.type == "table_close":
            return
        if token.type == "tr_open":
            first_cell = True
        elif token.type in ("th_open", "td_open"):
            cell = tokens[i + 1]
            if first_cell and token.type == "th_open":
                header = _inline_text(cell).strip()
            elif first_cell and header == "key":
                for child in cell.children or []:
                    if child.type == "code_inline":
                        yield child.content
            first_cell = False


def key_problems(text: str) -> list[str]:
    """One line per schema key without a row in the configuration page, and per row naming no
    key of the schema."""
    schema = schema_keys(_FileSchema())
    documented = documented_keys(text)
    missing = [f"{s} {k}".strip() + ": not documented" for s, k in sorted(schema - documented)]
    stale = [f"{s} {k}".strip() + ": not in the schema" for s, k in sorted(documented - schema)]
    return missing + stale


# How the work was organised is no part of the product: "issue 12", "this round", …
PROCESS_NOTE = re.compile(
    r"\bissues? #?\d+|\b(this|that|last|previous|next) (issue|round)\b|\bthe integrator\b",
    re.IGNORECASE,
)


def process_notes(files: list[Path], root: Path = ROOT) -> list[str]:
    """One line per internal process note, with its page and line number."""
    return [
        f"{page.relative_to(root)}:{number}: {found.group(0)!r}"
        for page in files
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1)
        for found in PROCESS_NOTE.finditer(line)
    ]


def test_links_and_anchors_resolve() -> None:
    assert link_problems(pages()) == []


def test_every_configuration_key_is_documented() -> None:
    assert key_problems(CONFIG_PAGE.read_text(encoding="utf-8")) == []


def test_no_internal_process_notes() -> None:
    assert process_notes(pages()) == []


def test_the_readme_starts_with_the_two_commands() -> None:
    """A newcomer's first two commands: the demo, then the whole test suite."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first = next(t for t in MD.parse(readme) if t.type in ("code_block", "fence"))
    assert first.content.split() == ["./run", "demo", "./run", "test"]


def test_the_errors_table_is_the_problem_catalogue() -> None:
    """docs/errors.md has one row per code: exactly the catalogue's codes, with their statuses,
    and so every code the contract lists."""
    rows = re.findall(
        r"^\| `([a-z0-9_]+)` \| (\d{3}) \|",
        (ROOT / "docs" / "errors.md").read_text(encoding="utf-8"),
        re.MULTILINE,
    )
    codes = [code for code, _ in rows]
    assert len(codes) == len(set(codes))
    catalogue = {(code, str(problem.status)) for code, problem in PROBLEMS.items()}
    assert set(rows) == catalogue, (
        f"only in docs/errors.md: {sorted(set(rows) - catalogue)}; "
        f"only in the catalogue: {sorted(catalogue - set(rows))}"
    )
    contract = (ROOT / "music_facade" / "openapi.yaml").read_text(encoding="utf-8")
    listed = set(re.findall(r"^ +\| `([a-z0-9_]+)` \| (\d{3}) \|", contract, re.MULTILINE))
    assert listed, "the contract's Problem table moved: update this test"
    assert listed - set(rows) == set()


# The checks themselves, on small pages made here: each reports what it must.


def test_the_link_check_bites(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## Two words `here`\n")
    (tmp_path / "README.md").write_text(
        "[ok](docs/a.md#two-words-here) [ok](#top) [web](https://example.com/x)\n"
        "[gone](docs/b.md) [no anchor](docs/a.md#three) [outside](../elsewhere.md)\n"
        "`[code](docs/c.md)` is not a link\n\n# Top\n"
    )
    assert link_problems(pages(tmp_path), tmp_path) == [
        "README.md: docs/b.md names no file",
        "README.md: docs/a.md#three names no heading of a.md",
        "README.md: ../elsewhere.md leads outside the repository",
    ]


def test_slugs_are_githubs() -> None:
    text = "# `GET /music/{id}` (and `HEAD`)\n## Read once, by gunicorn's master\n## A\n## A\n"
    assert anchors(text) == {"get-musicid-and-head", "read-once-by-gunicorns-master", "a", "a-1"}


def test_the_key_check_bites() -> None:
    text = CONFIG_PAGE.read_text(encoding="utf-8")
    without_deadline = re.sub(r"^\| `deadline` \|.*\n", "", text, flags=re.MULTILINE)
    assert key_problems(without_deadline) == ["[upstream] deadline: not documented"]
    invented = (
        text + "\n## `[cache]`\n\n| key | default | meaning |\n|---|---|---|\n| `size` | 1 | |\n"
    )
    assert key_problems(invented) == ["[cache] size: not in the schema"]


def test_the_schema_walk_finds_nested_sections() -> None:
    keys = schema_keys(_FileSchema())
    assert {("", "users"), ("[upstream]", "deadline"), ("[[clients]]", "key_sha256")} <= keys
    assert ("[oidc]", "scopes") in keys


def test_the_process_note_check_bites(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("Measured in 5 rounds.\nAfter issue 9 landed.\n")
    (tmp_path / "docs" / "x.md").write_text("A decision beyond this issue.\nThis round: faster.\n")
    assert process_notes(pages(tmp_path), tmp_path) == [
        "README.md:2: 'issue 9'",
        "docs/x.md:1: 'this issue'",
        "docs/x.md:2: 'This round'",
    ]
