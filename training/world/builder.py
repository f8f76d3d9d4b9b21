"""`ftctl world build`: Debian packages -> the compact world data under `training/world/data/`.

Usage::

    manifest = build_world_data(BuildConfig(), out_dir="training/world/data")
    manifest["digest"]          # sha256 over the data files; the same twice for the same packages

Steps (all deterministic under `BuildConfig.seed`):
1. extract the corpora (`corpora.extract_all`) and build the tasks (`tasks.build_tasks`), which
   reserve the entries they use;
2. turn each upstream source into documents (Bible chapters, runs of Austen paragraphs, Python
   reST sections, WordNet gloss lines, fortunes, Jargon and Devil entries) without the reserved
   entries, ASCII-folded so that no 128-token cut can split a UTF-8 character, and shuffle them;
3. train the byte-level BPE on that text;
4. per source: one token stream (EOS between documents) cut into 128-token chunks, a pool of up
   to `pool_per_source` chunks, each an `Example.text` whose id is its content hash;
5. write `upstream.jsonl.gz`, `tasks.jsonl.gz` + `tasks-freedict.jsonl.gz` (gzip with mtime 0:
   byte-identical rebuilds), `tokenizer/`, `manifest.json` (sizes, package versions, digest) and,
   for an output directory other than the package's, a copy of `LICENSES.md`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import re
import shutil
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from training.world.corpora import (
    DebianPaths,
    RawCorpora,
    extract_all,
    find_austen_deb,
    package_versions,
)
from training.world.tasks import Reserved, TaskBuildConfig, TaskSpec, build_tasks
from training.world.tokenizer import EOS, save_hf_tokenizer, train_bpe

SOURCES = ("bible", "austen", "pydoc", "wordnet", "fortunes", "jargon", "devil")
PACKAGES = (
    "bible-kjv",
    "bible-kjv-text",
    "r-cran-janeaustenr",
    "python3.11-doc",
    "wordnet-base",
    "fortunes",
    "fortunes-min",
    "dict-jargon",
    "dict-devil",
    *(f"dict-freedict-eng-{x}" for x in ("fra", "deu", "spa", "ita", "por", "nld", "swe")),
)
DATA_DIR = Path(__file__).parent / "data"
TASK_FILES = ("tasks.jsonl.gz", "tasks-freedict.jsonl.gz")


@dataclass(frozen=True)
class BuildConfig:
    seed: int = 0
    chunk_tokens: int = 128
    pool_per_source: int = 1000
    vocab_size: int = 2048
    tasks: TaskBuildConfig = field(default_factory=TaskBuildConfig)
    paths: DebianPaths = field(default_factory=DebianPaths)


_FOLD = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2014": "--",
        "\u2013": "-",
        "\u2026": "...",
        "\u00a0": " ",
        "\u2010": "-",
    }
)


def ascii_fold(text: str) -> str:
    """Typographic quotes/dashes to ASCII, accents stripped, anything else non-ASCII dropped."""
    text = unicodedata.normalize("NFKD", text.translate(_FOLD))
    return text.encode("ascii", "ignore").decode("ascii")


def _groups(items: list[str], size: int, sep: str = "\n") -> list[str]:
    return [sep.join(items[i : i + size]) for i in range(0, len(items), size)]


def upstream_documents(raw: RawCorpora, res: Reserved) -> dict[str, list[str]]:
    """Per source, its documents in corpus order with every task-reserved entry removed."""
    docs: dict[str, list[str]] = {}
    docs["bible"] = [
        f"{c.book} {c.number}\n" + "\n".join(f"{i} {v}" for i, v in enumerate(c.verses, 1))
        for c in raw.bible
        if (c.book, c.number) not in res.bible
    ]
    austen = []
    for novel, paras in raw.austen.items():
        keep = [p for i, p in enumerate(paras) if (novel, i) not in res.austen]
        austen += _groups(keep, 8, "\n\n")
    docs["austen"] = austen
    pydoc = []
    for d in raw.pydoc_docs:  # split long reST files at blank lines into ~2,000-character pieces
        piece: list[str] = []
        for para in re.split(r"\n\s*\n", d):
            piece.append(para)
            if sum(map(len, piece)) > 2000:
                pydoc.append("\n\n".join(piece))
                piece = []
        if piece:
            pydoc.append("\n\n".join(piece))
    docs["pydoc"] = pydoc
    wn = [
        f"{', '.join(s.lemmas)} ({s.lexname.split('.')[0]}): {s.gloss}"
        for s in raw.wordnet
        if s.key not in res.wordnet
    ]
    docs["wordnet"] = _groups(wn, 20)
    fort = [
        e
        for cat, entries in sorted(raw.fortunes.items())
        for i, e in enumerate(entries)
        if (cat, i) not in res.fortunes
    ]
    docs["fortunes"] = _groups(fort, 8, "\n%\n")
    docs["jargon"] = _groups([f"{w}: {b}" for w, b in raw.jargon if w not in res.jargon], 5, "\n\n")
    docs["devil"] = _groups([b for w, b in raw.devil if w not in res.devil], 8, "\n\n")
    return docs


def _shuffled(docs: list[str], seed: int, source: str) -> list[str]:
    out = [ascii_fold(d).strip() for d in docs]
    out = [d for d in out if d]
    random.Random(f"{seed}:{source}").shuffle(out)
    return out


def _budget(docs: list[str], chars: int) -> list[str]:
    out, total = [], 0
    for d in docs:
        if total >= chars:
            break
        out.append(d)
        total += len(d)
    return out


def chunk_source(tok: Any, docs: list[str], n: int, length: int) -> list[str]:
    """The first `n` `length`-token chunks of the EOS-joined stream, decoded back to text."""
    eos = tok.token_to_id(EOS)
    stream: list[int] = []
    for enc in tok.encode_batch(docs):
        stream += [*enc.ids, eos]
        if len(stream) >= n * length:
            break
    chunks = []
    for i in range(0, min(len(stream), n * length) - length + 1, length):
        ids = [t for t in stream[i : i + length] if t != eos]
        text = tok.decode(ids, skip_special_tokens=True).strip()
        if text:
            chunks.append(text)
    return chunks


def _gzip_jsonl(rows: list[dict[str, Any]]) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=9, filename="") as f:
        for r in rows:
            f.write((json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n").encode())
    return buf.getvalue()


def task_rows(specs: list[TaskSpec], test_size: int, seed: int) -> list[dict[str, Any]]:
    """One JSON row per task: the pairs shuffled under the seed, the last `test_size` the test."""
    rows = []
    for s in specs:
        pairs = [list(p) for p in s.pairs]
        random.Random(f"{seed}:split:{s.name}").shuffle(pairs)
        cut = len(pairs) - test_size
        rows.append(
            {
                "name": s.name,
                "family": s.family,
                "description": s.description,
                "train": pairs[:cut],
                "test": pairs[cut:],
            }
        )
    return rows


def files_digest(out_dir: Path) -> str:
    """sha256 over the data files that define the world (names and bytes, sorted)."""
    h = hashlib.sha256()
    for p in sorted(out_dir.rglob("*")):
        if p.is_file() and p.name not in ("manifest.json", "LICENSES.md"):
            h.update(p.relative_to(out_dir).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def pool_digest(out_dir: Path) -> str:
    """sha256 over what a scratch base model depends on: the chunk pool and the tokenizer."""
    h = hashlib.sha256()
    for name in ("upstream.jsonl.gz", "tokenizer/tokenizer.json"):
        h.update(name.encode() + b"\0" + (out_dir / name).read_bytes())
    return h.hexdigest()[:16]


def build_world_data(
    cfg: BuildConfig | None = None,
    out_dir: str | Path = DATA_DIR,
    raw: RawCorpora | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Build the whole world data directory; returns the manifest (also written to disk)."""
    cfg = cfg or BuildConfig()
    say = progress or (lambda msg: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say("extracting corpora from the Debian packages")
    raw = raw or extract_all(cfg.paths)
    specs, res = build_tasks(raw, cfg.tasks)
    say(f"{len(specs)} tasks; building upstream documents")
    docs = {s: _shuffled(d, cfg.seed, s) for s, d in upstream_documents(raw, res).items()}
    # Enough text for the pool plus slack (byte-level BPE at V=2,048: 2.5-3.5 chars/token).
    budget = cfg.pool_per_source * cfg.chunk_tokens * 5
    docs = {s: _budget(docs[s], budget) for s in SOURCES}
    say("training the BPE tokenizer")
    tok = train_bpe([d for s in SOURCES for d in docs[s]], cfg.vocab_size)
    pool = []
    for s in SOURCES:
        for text in chunk_source(tok, docs[s], cfg.pool_per_source, cfg.chunk_tokens):
            pool.append({"source": s, "text": text})
    for r in pool:  # the id is training.data.content_id("", text): Example.text(text).id
        r["id"] = hashlib.sha256(f"\x1f{r['text']}".encode()).hexdigest()[:16]
    (out / "upstream.jsonl.gz").write_bytes(_gzip_jsonl(pool))
    rows = task_rows(specs, cfg.tasks.test_size, cfg.tasks.seed)
    # FreeDict is GPL: its translation tasks live in their own file, which can be left out of a
    # redistribution without touching the rest (load_world reads it when present).
    (out / TASK_FILES[0]).write_bytes(
        _gzip_jsonl([r for r in rows if r["family"] != "translation"])
    )
    (out / TASK_FILES[1]).write_bytes(
        _gzip_jsonl([r for r in rows if r["family"] == "translation"])
    )
    save_hf_tokenizer(tok, out / "tokenizer")
    counts = {s: sum(r["source"] == s for r in pool) for s in SOURCES}
    manifest = {
        "digest": files_digest(out),
        "pool_digest": pool_digest(out),
        "config": asdict(cfg),
        "pool": counts,
        "tasks": {s.name: len(s.pairs) for s in specs},
        "packages": package_versions(
            list(PACKAGES), {"r-cran-janeaustenr": find_austen_deb(cfg.paths)}
        ),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    licences = DATA_DIR / "LICENSES.md"  # the licence note travels with every copy of the data
    if out.resolve() != DATA_DIR.resolve() and licences.is_file():
        shutil.copyfile(licences, out / "LICENSES.md")
    say(f"wrote {out} (digest {manifest['digest']})")
    return manifest
