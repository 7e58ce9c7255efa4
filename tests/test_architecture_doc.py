"""docs/architecture.md names files and folders; each of them must exist, so that the page
cannot silently go stale when code moves.

A repository path is a word of path characters (letters, digits, ``_ . - / *``) that holds a
``/`` or ends with ``.py`` and does not start with ``/`` (an HTTP route): a code span in the
prose (``api/routes/messages.py``), or a word standing alone between spaces and box-drawing
characters in the diagrams. Keys, routes and commands (``mas:{...}``, ``POST /v1/messages``,
``mas up``) hold other characters or spaces and are not paths. A path names a file or folder
from the repository's root or from one of the package folders (``sidecar/mas_sidecar/``, ...),
as the page says; ``*`` is a glob that must match something.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
PATH_WORD = r"[A-Za-z0-9_.*/-]+"
CODE_SPAN = re.compile(r"`([^`]+)`")  # a code span may go on over a line break
FENCED = re.compile(r"^```[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)
# A word of path characters bounded by whitespace, box drawing, blocks, shapes or arrows.
_EDGE = r"\s\u2190-\u21ff\u2500-\u25ff"
DIAGRAM_WORD = re.compile(rf"(?<![^{_EDGE}]){PATH_WORD}(?![^{_EDGE}])")


def _looks_like_a_path(text: str) -> bool:
    return (
        re.fullmatch(PATH_WORD, text) is not None
        and ("/" in text or text.endswith(".py"))
        and not text.startswith("/")
    )


def _package_folders() -> list[Path]:
    """The folders of the packages pyproject.toml installs (``core/mas_core``, ...)."""
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return [
        package
        for where in setup["packages"]["find"]["where"]
        for package in sorted((ROOT / where).iterdir())
        if (package / "__init__.py").is_file()
    ]


def _paths_in(text: str) -> set[str]:
    prose = FENCED.sub("", text)
    spans = {span for span in CODE_SPAN.findall(prose) if _looks_like_a_path(span)}
    words = {
        word
        for block in FENCED.findall(text)
        for word in DIAGRAM_WORD.findall(block)
        if _looks_like_a_path(word)
    }
    return spans | words


def _exists(path: str, bases: list[Path]) -> bool:
    if "*" in path:
        return any(any(base.glob(path)) for base in bases)
    return any((base / path).exists() for base in bases)


def test_every_repository_path_the_architecture_doc_names_exists() -> None:
    paths = _paths_in(DOC.read_text())
    # The page does name paths: the rules above must not stop finding them.
    assert {"sidecar/mas_sidecar/", "checks/gateway.py", "streams/writer.py"} <= paths
    bases = [ROOT, *_package_folders()]
    missing = sorted(path for path in paths if not _exists(path, bases))
    assert missing == [], f"docs/architecture.md names paths that do not exist: {missing}"


def test_the_readme_layout_links_the_architecture_doc() -> None:
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout") :]
    assert "(docs/architecture.md)" in layout
