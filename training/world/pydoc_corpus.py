"""The Python documentation corpus of package python3.11-doc (part of `corpora.extract_all`).

Split out of `corpora.py`, same contract (deterministic, plain Python data). Usage::

    docs, api = extract_pydoc(DebianPaths())   # upstream reST documents; library API entries

It imports only `training.world.debian` (paths, the missing-package error); `corpora` imports
it, never the other way round.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from training.world.debian import DebianPaths, missing_package


@dataclass(frozen=True)
class ApiEntry:
    area: str  # chapter file of the library reference, e.g. "text", "filesys"
    name: str  # "os.listdir(path='.')"
    first_sentence: str


_DIRECTIVE = re.compile(
    r"^\.\. (function|method|class|exception|attribute|data|decorator)::\s+(.+)$"
)


def extract_pydoc(paths: DebianPaths) -> tuple[list[str], list[ApiEntry]]:
    """(upstream reST documents outside library/, API entries of library/ grouped by chapter)."""
    root = Path(paths.pydoc_dir)
    if not (root / "library").is_dir():
        raise missing_package(str(root), "python3.11-doc")
    docs = []
    for sub in (
        "tutorial",
        "howto",
        "reference",
        "faq",
        "using",
        "extending",
        "c-api",
        "installing",
    ):
        for f in sorted((root / sub).rglob("*.rst.txt")):
            docs.append(f.read_text(encoding="utf-8", errors="replace"))
    api: list[ApiEntry] = []
    lib = root / "library"
    chapter_re = re.compile(r"^\s+(\S+)\.rst\s*$")
    chapters = [
        m.group(1)
        for ln in (lib / "index.rst.txt").read_text().splitlines()
        if (m := chapter_re.match(ln))
    ]
    seen: set[str] = set()
    for chapter in chapters:
        ch_file = lib / f"{chapter}.rst.txt"
        modules = [
            m.group(1) for ln in ch_file.read_text().splitlines() if (m := chapter_re.match(ln))
        ]
        for mod_file in [chapter, *modules]:
            path = lib / f"{mod_file}.rst.txt"
            if path.exists() and mod_file not in seen:
                seen.add(mod_file)
                api.extend(
                    _api_entries(chapter, path.read_text(encoding="utf-8", errors="replace"))
                )
    return docs, api


def _api_entries(area: str, text: str) -> list[ApiEntry]:
    lines = text.splitlines()
    module = ""
    out = []
    for i, line in enumerate(lines):
        if line.startswith(".. module::") or line.startswith(".. currentmodule::"):
            module = line.split("::", 1)[1].strip()
        m = _DIRECTIVE.match(line)
        if not m:
            continue
        body: list[str] = []
        j = i + 1
        while j < len(lines) and (lines[j].startswith("   ") or not lines[j].strip()):
            if lines[j].strip().startswith(":") and not body:
                j += 1
                continue  # directive options such as :noindex:
            if not lines[j].strip() and body:
                break
            if lines[j].strip():
                body.append(lines[j].strip())
            j += 1
        para = _strip_rst(" ".join(body))
        sentence = (
            re.split(r"(?<=[a-z0-9)`'\"])\.\s", para + " ", maxsplit=1)[0].strip().rstrip(".")
        )
        name = m.group(2).strip()
        if module and "." not in name.split("(")[0]:
            name = f"{module}.{name}"
        if 15 <= len(sentence) <= 200:
            out.append(ApiEntry(area, name, sentence + "."))
    return out


def _strip_rst(s: str) -> str:
    s = re.sub(r":[a-z]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`", r"\1", s)  # :func:`x` -> x
    s = s.replace("``", "").replace("*", "")
    return re.sub(r"\s+", " ", s).strip()
