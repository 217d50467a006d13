"""Docstrings and comments cite only what the repository holds.

Every file name that a docstring or comment of ``dlnmc/``, ``studies/`` or ``tests/`` mentions
(``*.md``, ``*.py``, ``*.parquet``, ...) must name a file of the repository, and every
"mathematics.md section N" must name a numbered heading of ``dlnmc/mathematics.md``, the
project's own mathematical reference (issue 13: the code used to cite a reference document
that was not in the repository).
"""
from __future__ import annotations

import ast
import importlib.resources
import io
import re
import tokenize
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("dlnmc", "studies", "tests")
MATHEMATICS = ROOT / "dlnmc" / "mathematics.md"

EXTENSIONS = ("md", "py", "txt", "rst", "toml", "ipynb", "pdf", "tex", "parquet", "json", "csv",
              "png")
FILE_NAME = re.compile(
    r"(?<![\w/.<>{}*$-])"                       # not inside a longer name or path
    r"((?:[\w.<>{}*-]+/)*[\w<>{}*-][\w.<>{}*-]*\.(?:" + "|".join(EXTENSIONS) + r"))"
    r"(?![\w/])")
"""A file name or relative path with one of the extensions above."""

OUTPUTS = {"final.parquet", "history.parquet", "factors.parquet", "manifest.json", "report.md"}
"""Fixed names of the files a run writes into its output folder (not citations)."""
PLACEHOLDERS = {"out", "dir", "directory", "folder", "path", "name", "file", "study"}
"""Words that stand for a folder or name chosen by the caller (``out/report.md``,
``directory/name.png``): such a path names generated files, not a file of the repository."""

_NUMBER = r"\d+(?:\.\d+)*"
_NUMBERS = rf"{_NUMBER}(?:(?:\s*,\s*|\s+and\s+|\s*-\s*|\s+to\s+){_NUMBER})*"
SECTION_AFTER = re.compile(rf"mathematics\.md,?\s+(?:sections?|§)\s+({_NUMBERS})")
SECTION_BEFORE = re.compile(rf"(?:sections?|§)\s+({_NUMBERS})\s+of\s+(?:dlnmc/)?mathematics\.md")
HEADING = re.compile(rf"^#{{1,6}}\s+({_NUMBER})\.?\s+\S", re.MULTILINE)


def docs_and_comments(source: str):
    """(line, text) of every docstring (a string statement: module, class, function and
    attribute docstrings) and every block of consecutive comment lines of ``source``."""
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)):
            yield node.lineno, node.value.value
    block, start, last = [], None, None
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type != tokenize.COMMENT:
            continue
        line = tok.start[0]
        if block and line != last + 1:
            yield start, "\n".join(block)
            block = []
        if not block:
            start = line
        block.append(tok.string.lstrip("#").strip())
        last = line
    if block:
        yield start, "\n".join(block)


def repository_files(root: Path = ROOT) -> list[str]:
    """Paths (relative, with /) of the files of the working tree, hidden folders and caches
    left out."""
    skip = {"__pycache__", "node_modules"}
    out = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part.startswith(".") or part in skip or part.endswith(".egg-info")
               for part in rel.parts[:-1]):
            continue
        if path.is_file():
            out.append(rel.as_posix())
    return out


def section_numbers(text: str) -> set[str]:
    """The numbers of the numbered headings ("## 2. ...", "### 2.3 ...") of a markdown text."""
    return set(HEADING.findall(text))


def cited_sections(numbers: str) -> list[str]:
    return re.findall(_NUMBER, numbers)


def unresolved(name: str, files: list[str]) -> bool:
    """Whether a file name cited in a docstring or comment names no file of the repository."""
    if any(c in name for c in "<>{}*"):
        return False  # a pattern of generated names
    parts = [p for p in name.split("/") if p not in ("", ".", "..")]
    while len(parts) > 1 and parts[0] in PLACEHOLDERS:
        parts = parts[1:]
    if not parts:
        return False
    if len(parts) == 1 and (parts[0] in OUTPUTS or parts[0].split(".")[0] in PLACEHOLDERS):
        return False
    rel = "/".join(parts)
    return not any(f == rel or f.endswith("/" + rel) for f in files)


def problems_in(source: str, label: str, files: list[str], sections: set[str]) -> list[str]:
    """Every dangling citation in the docstrings and comments of one source file."""
    found = []
    for line, text in docs_and_comments(source):
        for m in FILE_NAME.finditer(text):
            if unresolved(m.group(1), files):
                found.append(f"{label}:{line}: cites {m.group(1)!r}, not in the repository")
        for pattern in (SECTION_AFTER, SECTION_BEFORE):
            for m in pattern.finditer(text):
                for number in cited_sections(m.group(1)):
                    if number not in sections:
                        found.append(f"{label}:{line}: cites mathematics.md section {number}, "
                                     "which has no such heading")
    return found


def scanned_sources():
    for folder in SCANNED:
        yield from sorted((ROOT / folder).rglob("*.py"))


def test_docstrings_and_comments_cite_only_existing_files_and_sections():
    files = repository_files()
    sections = section_numbers(MATHEMATICS.read_text(encoding="utf-8"))
    sources = list(scanned_sources())
    assert len(sources) > 20
    found = []
    for path in sources:
        found += problems_in(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)),
                             files, sections)
    assert not found, "dangling citations:\n" + "\n".join(found)


def test_mathematics_has_unique_numbered_sections():
    text = MATHEMATICS.read_text(encoding="utf-8")
    numbers = HEADING.findall(text)
    assert len(numbers) == len(set(numbers)), "a section number is used twice"
    for top in ("1", "2", "3", "4", "5", "6"):
        assert top in numbers
    for number in numbers:  # every subsection has its parent section
        if "." in number:
            assert number.rsplit(".", 1)[0] in numbers, number


def test_mathematics_is_shipped_with_the_package():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    data = pyproject["tool"]["setuptools"]["package-data"]["dlnmc"]
    assert "mathematics.md" in data
    assert importlib.resources.files("dlnmc").joinpath("mathematics.md").is_file()


def test_checker_flags_dangling_citations():
    """The checker itself: the citations issue 13 found are caught, legitimate ones are not."""
    files = ["dlnmc/mathematics.md", "dlnmc/kernels/gd.py", "data/x/tables/verdicts.parquet"]
    sections = {"1", "2", "2.3", "5", "5.2"}
    source = '''"""Module (REFERENCE.md section 2), see mathematics.md
section 2.3 and mathematics.md sections 5.2 and 9, gd.py and tables/verdicts.parquet."""
X = 1
"""Attribute docstring citing ../shared/REFERENCE.md."""


def f():
    """Writes ``out/report.md``, ``out/tables/<name>.parquet`` and ``directory/name.png``."""
    # a comment citing notes.txt and section 4 of mathematics.md,
    # continued: mathematics.md section 5.2
    return "REFERENCE.md in a plain string is code, not a citation"
'''
    found = problems_in(source, "m.py", files, sections)
    assert len(found) == 5, found
    assert sum("'REFERENCE.md'" in p for p in found) == 1
    assert sum("'../shared/REFERENCE.md'" in p for p in found) == 1
    assert sum("'notes.txt'" in p for p in found) == 1
    assert sum("section 9," in p for p in found) == 1
    assert sum("section 4," in p for p in found) == 1
