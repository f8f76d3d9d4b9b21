"""Extract raw text from the Debian corpora packages (maintainer step of `ftctl world build`).

Usage::

    paths = DebianPaths()                  # the default install locations
    raw = extract_all(paths)               # RawCorpora: bible chapters, Austen paragraphs, ...

Only `ftctl world build` calls this; everything else reads the compact data committed under
`training/world/data/`. Install the packages first (root)::

    apt-get install -y --no-install-recommends bible-kjv bible-kjv-text wordnet-base fortunes \
        fortunes-min dict-jargon dict-devil python3.11-doc dict-freedict-eng-{fra,deu,spa,ita,por,nld,swe}
    apt-get download r-cran-janeaustenr     # unpacked with dpkg -x, read with the `rdata` package

Every function returns plain Python data in a deterministic order (sorted paths, file order), so
the builder above it is a pure function of the package contents.
"""

from __future__ import annotations

import glob
import gzip
import os
import re
import subprocess
import tempfile
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

# DebianPaths and ApiEntry are re-exported: callers import them from here (cli/world.py, tests).
from training.world.debian import DebianPaths, missing_package
from training.world.errors import WorldError
from training.world.pydoc_corpus import ApiEntry, extract_pydoc

FREEDICT_LANGS: dict[str, str] = {
    "fra": "French",
    "deu": "German",
    "spa": "Spanish",
    "ita": "Italian",
    "por": "Portuguese",
    "nld": "Dutch",
    "swe": "Swedish",
}
AUSTEN_NOVELS: dict[str, str] = {
    "emma": "Emma",
    "mansfieldpark": "Mansfield Park",
    "northangerabbey": "Northanger Abbey",
    "persuasion": "Persuasion",
    "prideprejudice": "Pride and Prejudice",
    "sensesensibility": "Sense and Sensibility",
}


@dataclass(frozen=True)
class Chapter:
    book: str
    number: int
    verses: list[str]


@dataclass(frozen=True)
class Synset:
    key: str  # "<pos><offset>", unique
    lexname: str  # lexicographer domain, e.g. "noun.animal"
    lemmas: list[str]
    gloss: str


@dataclass
class RawCorpora:
    bible: list[Chapter] = field(default_factory=list)
    austen: dict[str, list[str]] = field(default_factory=dict)  # novel -> paragraphs
    pydoc_docs: list[str] = field(default_factory=list)  # non-library reST files (upstream)
    pydoc_api: list[ApiEntry] = field(default_factory=list)  # library API entries (tasks)
    wordnet: list[Synset] = field(default_factory=list)
    fortunes: dict[str, list[str]] = field(default_factory=dict)  # category -> entries
    jargon: list[tuple[str, str]] = field(default_factory=list)  # (term, body)
    devil: list[tuple[str, str]] = field(default_factory=list)
    freedict: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # lang -> pairs


# ---------------------------------------------------------------------------------------- Bible
def extract_bible(paths: DebianPaths) -> list[Chapter]:
    """The KJV, chapter by chapter, via the `bible` program of package bible-kjv."""
    try:
        out = subprocess.run(
            [paths.bible_program, "Genesis1:1-Revelation22:21"],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise missing_package("the `bible` program", "bible-kjv bible-kjv-text") from exc
    chapters: list[Chapter] = []
    book, number, verses = "", 0, []
    head = re.compile(r"^(\S.*\S) (\d+)$")
    verse = re.compile(r"^\s+(\d+) (.*)$")
    for line in out.splitlines():
        if m := head.match(line):
            if verses:
                chapters.append(Chapter(book, number, verses))
            book, number, verses = m.group(1), int(m.group(2)), []
        elif m := verse.match(line):
            verses.append(m.group(2).strip())
        elif line.strip() and verses:  # wrapped continuation of the previous verse
            verses[-1] += " " + line.strip()
    if verses:
        chapters.append(Chapter(book, number, verses))
    return chapters


# --------------------------------------------------------------------------------------- Austen
def find_austen_deb(paths: DebianPaths) -> str | None:
    """The r-cran-janeaustenr .deb: `paths.austen_deb`, else the newest in cwd or /tmp, else None."""
    if paths.austen_deb:
        return paths.austen_deb
    found = sorted(
        glob.glob("r-cran-janeaustenr_*.deb") + glob.glob("/tmp/r-cran-janeaustenr_*.deb")
    )
    return found[-1] if found else None


def _find_austen_deb(paths: DebianPaths) -> str:
    deb = find_austen_deb(paths)
    if deb is None:
        raise WorldError(
            "r-cran-janeaustenr .deb not found: run `apt-get download r-cran-janeaustenr` in the "
            "current directory (or /tmp), or pass DebianPaths(austen_deb=...)."
        )
    return deb


def extract_austen(paths: DebianPaths) -> dict[str, list[str]]:
    """Austen's six novels as paragraphs, read from the R package's lazy-load database.

    The .deb is unpacked with `dpkg -x` (no R needed); `Rdata.rdx` is gzip-compressed R
    serialisation of an index, each `Rdata.rdb` record a 4-byte length + zlib stream.
    """
    try:
        import rdata
    except ImportError as exc:
        raise WorldError("the `rdata` package is missing: `pip install rdata`") from exc
    deb = _find_austen_deb(paths)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["dpkg", "-x", deb, tmp], check=True)
        data = Path(tmp) / "usr/lib/R/site-library/janeaustenr/data"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            index = rdata.conversion.convert(
                rdata.parser.parse_data(gzip.decompress((data / "Rdata.rdx").read_bytes()))
            )
        blob = (data / "Rdata.rdb").read_bytes()
    novels: dict[str, list[str]] = {}
    for name in AUSTEN_NOVELS:
        off, length = (int(x) for x in index["variables"][name])
        with warnings.catch_warnings():  # "Unknown file type: assumed RDS": it is RDS
            warnings.simplefilter("ignore")
            lines = rdata.conversion.convert(
                rdata.parser.parse_data(zlib.decompress(blob[off + 4 : off + length]))
            )
        paragraphs, cur = [], []
        for line in [str(x) for x in lines] + [""]:
            if line.strip():
                cur.append(line.strip())
            elif cur:
                paragraphs.append(" ".join(cur))
                cur = []
        novels[name] = paragraphs
    return novels


# -------------------------------------------------------------------------------------- WordNet
def extract_wordnet(paths: DebianPaths) -> list[Synset]:
    """All synsets of WordNet 3.0 with their lexicographer domain (data.* field 2 = lexfile id)."""
    lexnames = _wordnet_lexnames()
    out: list[Synset] = []
    for pos in ("noun", "verb", "adj", "adv"):
        path = Path(paths.wordnet_dir) / f"data.{pos}"
        if not path.exists():
            raise missing_package(str(path), "wordnet-base")
        for line in path.read_text(encoding="latin-1").splitlines():
            if line.startswith("  ") or "|" not in line:
                continue  # licence header
            fields_, gloss = line.split("|", 1)
            parts = fields_.split()
            n_words = int(parts[3], 16)
            lemmas = [parts[4 + 2 * i].replace("_", " ") for i in range(n_words)]
            lemmas = [re.sub(r"\(.*\)$", "", w) for w in lemmas]  # adj markers "(a)", "(p)"
            out.append(
                Synset(f"{parts[2]}{parts[0]}", lexnames[int(parts[1])], lemmas, gloss.strip())
            )
    return out


def _wordnet_lexnames() -> list[str]:
    # The lexnames file is not in wordnet-base; this is WordNet 3.0's lexnames(5WN) order.
    return [
        "adj.all",
        "adj.pert",
        "adv.all",
        "noun.Tops",
        "noun.act",
        "noun.animal",
        "noun.artifact",
        "noun.attribute",
        "noun.body",
        "noun.cognition",
        "noun.communication",
        "noun.event",
        "noun.feeling",
        "noun.food",
        "noun.group",
        "noun.location",
        "noun.motive",
        "noun.object",
        "noun.person",
        "noun.phenomenon",
        "noun.plant",
        "noun.possession",
        "noun.process",
        "noun.quantity",
        "noun.relation",
        "noun.shape",
        "noun.state",
        "noun.substance",
        "noun.time",
        "verb.body",
        "verb.change",
        "verb.cognition",
        "verb.communication",
        "verb.competition",
        "verb.consumption",
        "verb.contact",
        "verb.creation",
        "verb.emotion",
        "verb.motion",
        "verb.perception",
        "verb.possession",
        "verb.social",
        "verb.stative",
        "verb.weather",
        "adj.ppl",
    ]


# ------------------------------------------------------------------------------------- fortunes
def extract_fortunes(paths: DebianPaths) -> dict[str, list[str]]:
    """English fortune categories (files with a .dat index), entries split on `%` lines."""
    root = Path(paths.fortunes_dir)
    if not root.is_dir():
        raise missing_package(str(root), "fortunes fortunes-min")
    out: dict[str, list[str]] = {}
    for dat in sorted(root.glob("*.dat")):
        src = dat.with_suffix("")
        if not src.is_file() or src.is_symlink():
            continue
        text = src.read_text(encoding="utf-8", errors="replace")
        entries = [e.strip("\n") for e in re.split(r"\n%\n", text) if e.strip()]
        out[src.name] = entries
    return out


# ---------------------------------------------------------------------------------- dict files
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _b64(s: str) -> int:
    n = 0
    for ch in s:
        n = n * 64 + _B64.index(ch)
    return n


def read_dictd(paths: DebianPaths, name: str, package: str) -> list[tuple[str, str]]:
    """(headword, entry body) pairs of a dictd database, in index order, `00database*` skipped."""
    index = Path(paths.dictd_dir) / f"{name}.index"
    if not index.exists():
        raise missing_package(str(index), package)
    with gzip.open(Path(paths.dictd_dir) / f"{name}.dict.dz") as f:  # dictzip is gzip
        data = f.read()
    out = []
    for line in index.read_text(encoding="utf-8").splitlines():
        word, off, length = line.split("\t")[:3]
        if word.startswith("00database") or word.startswith("00-database"):
            continue
        out.append((word, data[_b64(off) : _b64(off) + _b64(length)].decode("utf-8", "replace")))
    return out


def extract_freedict(paths: DebianPaths) -> dict[str, list[tuple[str, str]]]:
    """English→X single-word pairs: lower-case one-word headword, first listed translation."""
    out: dict[str, list[tuple[str, str]]] = {}
    for lang in FREEDICT_LANGS:
        pairs = []
        seen: set[str] = set()
        for word, body in read_dictd(paths, f"freedict-eng-{lang}", f"dict-freedict-eng-{lang}"):
            if not re.fullmatch(r"[a-z]{2,20}", word) or word in seen:
                continue
            lines = [ln.strip() for ln in body.splitlines()[1:] if ln.strip()]
            if not lines:
                continue
            first = re.sub(r"^\d+\.\s*", "", lines[0]).split(",")[0].split(";")[0].strip()
            if 1 <= len(first) <= 30 and not first.startswith(("<", "[", "(")):
                seen.add(word)
                pairs.append((word, first))
        out[lang] = pairs
    return out


def extract_dict_entries(paths: DebianPaths, name: str, package: str) -> list[tuple[str, str]]:
    """Jargon File / Devil's Dictionary entries, body re-flowed into one paragraph per blank line.

    Jargon entries start with a headword line and a pronunciation/part-of-speech line; both are
    dropped. Devil entries read "WORD, n.  definition", kept whole (that is the book's layout).
    """
    out = []
    for word, body in read_dictd(paths, name, package):
        if name == "jargon":
            body = body.split("\n\n", 1)[1] if "\n\n" in body else ""
        paras = [re.sub(r"\s+", " ", p).strip() for p in re.split(r"\n\s*\n", body)]
        text = "\n".join(p for p in paras if p)
        if len(text) > 20:
            out.append((word, text))
    return out


def extract_all(paths: DebianPaths | None = None) -> RawCorpora:
    """Everything the builder needs, from the installed packages (about 10 s)."""
    paths = paths or DebianPaths()
    docs, api = extract_pydoc(paths)
    return RawCorpora(
        bible=extract_bible(paths),
        austen=extract_austen(paths),
        pydoc_docs=docs,
        pydoc_api=api,
        wordnet=extract_wordnet(paths),
        fortunes=extract_fortunes(paths),
        jargon=extract_dict_entries(paths, "jargon", "dict-jargon"),
        devil=extract_dict_entries(paths, "devil", "dict-devil"),
        freedict=extract_freedict(paths),
    )


def _run_stdout(cmd: list[str]) -> str:
    try:
        return subprocess.run(
            cmd, capture_output=True, text=True, check=False, env={**os.environ, "LC_ALL": "C"}
        ).stdout.strip()
    except OSError:
        return ""


def package_versions(
    packages: list[str], debs: dict[str, str | None] | None = None
) -> dict[str, str]:
    """Debian package versions (for the manifest); empty where neither dpkg tool can tell.

    An installed package is asked with `dpkg-query`; one used as a downloaded .deb (`debs`:
    package -> .deb path, e.g. r-cran-janeaustenr, which is unpacked and never installed) is
    read with `dpkg-deb -f <deb> Version`.
    """
    debs = debs or {}
    out = {}
    for p in packages:
        v = _run_stdout(["dpkg-query", "-W", "-f=${Version}", p])
        deb = debs.get(p)
        if not v and deb:
            v = _run_stdout(["dpkg-deb", "-f", deb, "Version"])
        out[p] = v
    return out
