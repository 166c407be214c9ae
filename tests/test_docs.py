"""The docs keep up with the code: every CLI command and option is in docs/cli.md, every environment
variable the code reads is documented, every relative link in README.md and docs/ resolves (file and
heading), and docs/architecture.md names every package folder under src/facefinder/.

Fast: it walks the Typer app and reads the source as text; no model, catalog or index is opened."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import typer

import facefinder
from facefinder.interfaces.cli import app

REPO = Path(__file__).resolve().parents[1]
PACKAGE = Path(facefinder.__file__).resolve().parent
DOCS = REPO / "docs"
PAGES = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]
CLI_PAGE = DOCS / "cli.md"
ARCHITECTURE_PAGE = DOCS / "architecture.md"
LAYOUT_MARKER = "<!-- layout: keep in sync with src/ (tests/test_docs.py checks) -->"


def all_docs() -> str:
    return "\n".join(page.read_text() for page in PAGES)


# ----- the CLI -----------------------------------------------------------------------------------------
def walk(command, path: tuple[str, ...] = ("facefinder",)):
    """(path, command) for the app and every command and subcommand below it. Typer vendors its own
    click, so groups are found by their ``commands`` rather than by isinstance(click.Group)."""
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from walk(sub, (*path, name))


COMMANDS = list(walk(typer.main.get_command(app)))


def test_the_walk_finds_the_commands():
    """A guard against a test that checks nothing: known commands and subcommands are found."""
    paths = {" ".join(path) for path, _ in COMMANDS}
    assert {"facefinder ingest", "facefinder collections create", "facefinder users token"} <= paths


@pytest.mark.parametrize("path", [path for path, _ in COMMANDS[1:]], ids=" ".join)
def test_every_command_is_in_the_cli_reference(path):
    pattern = r"\b" + r"\s+".join(map(re.escape, path)) + r"(?![\w-])"
    assert re.search(pattern, CLI_PAGE.read_text()), f"{' '.join(path)!r} is not in docs/cli.md"


def test_every_option_is_in_the_cli_reference():
    text = CLI_PAGE.read_text()
    missing = sorted(
        {
            f"{' '.join(path)}: {opt}"
            for path, command in COMMANDS
            for param in command.params
            if param.param_type_name == "option"
            for opt in (*param.opts, *param.secondary_opts)
            if opt.startswith("--") and not re.search(re.escape(opt) + r"(?![\w-])", text)
        }
    )
    assert missing == []


# ----- environment variables ---------------------------------------------------------------------------
ENV_NAME = re.compile(r"FACEFINDER_[A-Z0-9_]*[A-Z0-9]")


def environment_variables() -> set[str]:
    """FACEFINDER_* names in the string literals of the package's source, and the CLI's envvars;
    test-only ones (FACEFINDER_TEST_*) are for development.md, not required."""
    found: set[str] = set()
    for source in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found |= set(ENV_NAME.findall(node.value))
    for _, command in COMMANDS:
        for param in command.params:
            envvars = param.envvar if isinstance(param.envvar, (list, tuple)) else [param.envvar]
            found |= {name for name in envvars if name}
    return {name for name in found if not name.startswith("FACEFINDER_TEST_")}


def test_the_scan_finds_the_environment_variables():
    assert {"FACEFINDER_DATA_DIR", "FACEFINDER_DATABASE_URL", "FACEFINDER_VECTORS"} <= environment_variables()


def test_every_environment_variable_is_documented():
    text = all_docs()
    assert sorted(name for name in environment_variables() if not re.search(rf"\b{name}\b", text)) == []


# ----- links -------------------------------------------------------------------------------------------
FENCE = re.compile(r"^(```|~~~).*?^\1\s*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`+[^`\n]*`+")
LINK = re.compile(r"!?\[(?:[^\]\n]|\][^(\n])*?\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE)


def prose(text: str) -> str:
    """The text without code blocks, whose `[x](y)` and `# comment` are not links or headings."""
    return FENCE.sub("", text)


def anchors(page: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped (not - or _), spaces to hyphens, and
    -1, -2... on repeats."""
    seen: dict[str, int] = {}
    ids = set()
    for heading in HEADING.findall(prose(page.read_text())):
        heading = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        ids.add(slug if count == 0 else f"{slug}-{count}")
    ids |= set(re.findall(r"<a\s+(?:name|id)=\"([^\"]+)\"", page.read_text()))
    return ids


def relative_links(page: Path) -> list[str]:
    text = INLINE_CODE.sub("", prose(page.read_text()))
    return [target for target in LINK.findall(text) if not re.match(r"^[a-z][a-z0-9+.-]*:", target)]


def test_the_link_scan_finds_links():
    assert "docs/cli.md" in relative_links(REPO / "README.md")
    assert "scaling-out-milvus-and-ray" in anchors(REPO / "README.md")
    assert "--json-output" in anchors(CLI_PAGE)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no such heading")
    assert broken == []


# ----- the layout --------------------------------------------------------------------------------------
def package_folders() -> list[str]:
    return sorted(
        f"{init.parent.relative_to(PACKAGE).as_posix()}/"
        for init in PACKAGE.rglob("__init__.py")
        if init.parent != PACKAGE
    )


def test_architecture_names_every_package_folder():
    text = ARCHITECTURE_PAGE.read_text()
    assert LAYOUT_MARKER in text
    assert "services/" in package_folders()
    assert [folder for folder in package_folders() if f"`{folder}`" not in text] == []


def test_architecture_names_every_module_in_its_folders_row():
    """Each module is named in its folder's row of the table, so the page cannot drift from src/."""
    rows = {  # the first `code` span of a row names its folder
        line.split("`")[1]: line for line in ARCHITECTURE_PAGE.read_text().splitlines() if line.startswith("| `")
    }
    missing = []
    for module in PACKAGE.rglob("*.py"):
        if module.name == "__init__.py":
            continue
        folder = module.parent.relative_to(PACKAGE).as_posix()
        row = rows.get("./" if folder == "." else f"{folder}/", "")
        if f"`{module.name}`" not in row:
            missing.append(module.relative_to(PACKAGE).as_posix())
    assert missing == []


def test_the_readme_tree_names_every_package_folder():
    """The README's architecture tree shows each folder (by its last name, indented under its parent)."""
    tree = (REPO / "README.md").read_text().split("## Architecture", 1)[1].split("```")[1]
    assert [f for f in package_folders() if f"{f.rstrip('/').rsplit('/', 1)[-1]}/" not in tree] == []
