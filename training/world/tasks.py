"""Build the world's instruction tasks from the raw corpora, and what they reserve.

Usage::

    specs, reserved = build_tasks(raw, TaskBuildConfig())
    specs[0]        # TaskSpec(name='wn_noun_animal', family='wordnet', description=..., pairs=[...])
    reserved.wordnet  # synset keys the upstream set must not contain

Every task is a list of (prompt, response) pairs with SHORT, learnable responses (a gloss
clause, a translation, a verse ending, a novel title): the prototype world showed that
high-entropy responses (whole fortunes) barely learn. Each task's examples come from entries
that the builder then removes from the upstream text (`Reserved`), so no test example appears
verbatim in the upstream set. Prompts end with a newline so that the response tokenises the
same whether or not it follows the prompt.

Pure functions of `RawCorpora` and a seed: sorted inputs, `random.Random(seed)` draws.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, field

from training.world.corpora import AUSTEN_NOVELS, FREEDICT_LANGS, RawCorpora


@dataclass(frozen=True)
class TaskBuildConfig:
    per_task: int = 360  # examples per task before the train/test split
    test_size: int = 60
    wordnet_domains: int = 22  # the largest lexicographer domains get a task each
    seed: int = 0


@dataclass
class TaskSpec:
    name: str
    family: str
    description: str
    pairs: list[tuple[str, str]]


@dataclass
class Reserved:
    """Entries used by tasks; the upstream builder skips them."""

    bible: set[tuple[str, int]] = field(default_factory=set)  # (book, chapter)
    austen: set[tuple[str, int]] = field(default_factory=set)  # (novel, paragraph index)
    wordnet: set[str] = field(default_factory=set)  # synset keys
    fortunes: set[tuple[str, int]] = field(default_factory=set)  # (category, entry index)
    jargon: set[str] = field(default_factory=set)
    devil: set[str] = field(default_factory=set)


BIBLE_GROUPS: dict[str, tuple[str, str, str]] = {
    # task name: (first book, last book, description)
    "bible_law": ("Genesis", "Deuteronomy", "the Law (Genesis-Deuteronomy)"),
    "bible_history": ("Joshua", "Esther", "the historical books (Joshua-Esther)"),
    "bible_wisdom": ("Job", "Song of Solomon", "the wisdom books (Job-Song of Solomon)"),
    "bible_prophets": ("Isaiah", "Malachi", "the prophets (Isaiah-Malachi)"),
    "bible_gospels": ("Matthew", "John", "the four gospels"),
    "bible_epistles": ("Acts", "Revelation", "Acts, the epistles and Revelation"),
}
PY_AREAS: dict[str, tuple[str, ...]] = {
    "py_os": ("allos", "unix"),
    "py_internet": ("internet", "netdata"),
    "py_formats": ("markup", "fileformats", "archiving", "persistence"),
    "py_runtime": ("development", "debug", "python", "language", "modules", "custominterp"),
    "py_data": ("datatypes", "numeric", "functional", "text", "binary", "stdtypes"),
    "py_io": ("ipc", "concurrency", "filesys"),
    "py_misc": (
        "functions",
        "exceptions",
        "constants",
        "crypto",
        "i18n",
        "mm",
        "tk",
        "frameworks",
        "windows",
        "distribution",
        "superseded",
    ),
}
FORTUNE_TASKS = ("computers", "definitions", "people", "politics")
AUSTEN_COMPLETION = ("prideprejudice", "emma", "mansfieldpark")


def _split_half(text: str, min_words: int = 6, max_tail: int = 12) -> tuple[str, str] | None:
    """Cut a sentence into (head, tail) with a tail of at most `max_tail` words."""
    words = text.split()
    if len(words) < min_words:
        return None
    cut = max(len(words) // 2, len(words) - max_tail)
    return " ".join(words[:cut]), " ".join(words[cut:])


def _take(rng: random.Random, items: list, n: int) -> list:
    return rng.sample(items, n) if len(items) > n else list(items)


def _clause(gloss: str, limit: int = 100) -> str | None:
    first = gloss.split(";")[0].strip().strip('"').strip()
    return first if 8 <= len(first) <= limit else None


def wordnet_tasks(raw: RawCorpora, cfg: TaskBuildConfig, res: Reserved) -> list[TaskSpec]:
    """ "Define: word" -> first gloss clause, one task per large lexicographer domain.

    Only monosemous lemmas (one synset in all of WordNet), so each prompt has one answer.
    """
    senses = Counter(w.lower() for s in raw.wordnet for w in set(s.lemmas))
    sizes = Counter(s.lexname for s in raw.wordnet)
    domains = [d for d, _ in sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))][
        : cfg.wordnet_domains
    ]
    out = []
    for dom in domains:
        rng = random.Random(f"{cfg.seed}:wn:{dom}")
        cands = []
        for s in raw.wordnet:
            word = s.lemmas[0]
            clause = _clause(s.gloss)
            if (
                s.lexname == dom
                and clause
                and senses[word.lower()] == 1
                and re.fullmatch(r"[A-Za-z -]{2,30}", word)
            ):
                cands.append((s.key, word, clause))
        chosen = _take(rng, cands, cfg.per_task)
        res.wordnet.update(k for k, _, _ in chosen)
        pos, _, area = dom.partition(".")
        out.append(
            TaskSpec(
                f"wn_{pos}_{area}".lower(),
                "wordnet",
                f"Define a {pos} from WordNet's {dom} domain (word -> first gloss clause).",
                [(f"Define: {w}\n", c) for _, w, c in chosen],
            )
        )
    return out


def translation_tasks(raw: RawCorpora, cfg: TaskBuildConfig) -> list[TaskSpec]:
    """ "Translate to French: fly" -> "voler" from the FreeDict English→X dictionaries."""
    out = []
    for lang, label in FREEDICT_LANGS.items():
        rng = random.Random(f"{cfg.seed}:tr:{lang}")
        pairs = []
        for eng, tr in raw.freedict.get(lang, []):
            clean = re.sub(
                r"\s+", " ", re.sub(r"<[^>]*>|\[[^\]]*\]|\([^)]*\)|\{[^}]*\}", "", tr)
            ).strip()
            if 1 <= len(clean) <= 30:
                pairs.append((f"Translate to {label}: {eng}\n", clean))
        out.append(
            TaskSpec(
                f"translate_{lang}",
                "translation",
                f"Translate an English word to {label} (FreeDict eng-{lang}).",
                _take(rng, pairs, cfg.per_task),
            )
        )
    return out


def python_tasks(raw: RawCorpora, cfg: TaskBuildConfig) -> list[TaskSpec]:
    """ "Python: what does os.listdir(path='.') do?" -> first sentence of its library entry.

    The upstream Python source holds only the tutorial/howto/reference/FAQ/C-API documents, never
    library/, so these answers cannot leak into it.
    """
    out = []
    for name, areas in PY_AREAS.items():
        rng = random.Random(f"{cfg.seed}:py:{name}")
        seen: set[str] = set()
        pairs = []
        for e in raw.pydoc_api:
            if (
                e.area in areas
                and not e.name.endswith("\\")
                and len(e.first_sentence.split()) >= 4
                and e.name not in seen
            ):
                seen.add(e.name)
                pairs.append((f"Python: what does {e.name} do?\n", e.first_sentence))
        out.append(
            TaskSpec(
                name,
                "python-doc",
                f"Describe a Python standard-library API ({', '.join(areas[:3])}...) in one sentence.",
                _take(rng, pairs, cfg.per_task),
            )
        )
    return out


def bible_tasks(raw: RawCorpora, cfg: TaskBuildConfig, res: Reserved) -> list[TaskSpec]:
    """ "Complete the verse (Genesis 1:3): And God said," -> "Let there be light: ..."

    Verses come from whole chapters drawn at random; those chapters leave the upstream set.
    """
    books = list(dict.fromkeys(c.book for c in raw.bible))
    out = []
    for name, (first, last, desc) in BIBLE_GROUPS.items():
        rng = random.Random(f"{cfg.seed}:bible:{name}")
        span = set(books[books.index(first) : books.index(last) + 1])
        chapters = [c for c in raw.bible if c.book in span]
        rng.shuffle(chapters)
        pairs: list[tuple[str, str]] = []
        for ch in chapters:
            if len(pairs) >= cfg.per_task:
                break
            res.bible.add((ch.book, ch.number))
            for i, v in enumerate(ch.verses, 1):
                cut = _split_half(v)
                if cut and len(pairs) < cfg.per_task:
                    pairs.append(
                        (f"Complete the verse ({ch.book} {ch.number}:{i}): {cut[0]}\n", cut[1])
                    )
        out.append(TaskSpec(name, "bible", f"Complete a King James verse from {desc}.", pairs))
    return out


def _sentences(paragraph: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+(?=[A-Z\"'])", paragraph) if s.strip()]


def austen_tasks(raw: RawCorpora, cfg: TaskBuildConfig, res: Reserved) -> list[TaskSpec]:
    """Which-novel classification over all six novels, and sentence completion for three."""
    out = []
    rng = random.Random(f"{cfg.seed}:austen:novel")
    per_novel = cfg.per_task // len(AUSTEN_NOVELS) + 1
    pairs: list[tuple[str, str]] = []
    for novel, title in AUSTEN_NOVELS.items():
        paras = list(enumerate(raw.austen.get(novel, [])))
        rng.shuffle(paras)
        got = 0
        for idx, p in paras:
            sents = [s for s in _sentences(p) if 8 <= len(s.split()) <= 30]
            if sents and got < per_novel:
                res.austen.add((novel, idx))
                pairs.append((f"Which Jane Austen novel is this from? {sents[0]}\n", title))
                got += 1
    rng.shuffle(pairs)
    out.append(
        TaskSpec(
            "austen_novel",
            "austen",
            "Name the Jane Austen novel a sentence comes from.",
            pairs[: cfg.per_task],
        )
    )
    for novel in AUSTEN_COMPLETION:
        rng = random.Random(f"{cfg.seed}:austen:{novel}")
        paras = list(enumerate(raw.austen.get(novel, [])))
        rng.shuffle(paras)
        comp: list[tuple[str, str]] = []
        for idx, p in paras:
            if len(comp) >= cfg.per_task:
                break
            if (novel, idx) in res.austen:
                continue
            sents = [s for s in _sentences(p) if 8 <= len(s.split()) <= 40]
            if sents and (cut := _split_half(sents[0], 8, 10)):
                res.austen.add((novel, idx))
                comp.append(
                    (f"Continue this sentence from {AUSTEN_NOVELS[novel]}: {cut[0]}\n", cut[1])
                )
        out.append(
            TaskSpec(
                f"austen_complete_{novel}",
                "austen",
                f"Finish a sentence from {AUSTEN_NOVELS[novel]}.",
                comp,
            )
        )
    return out


def fortune_tasks(raw: RawCorpora, cfg: TaskBuildConfig, res: Reserved) -> list[TaskSpec]:
    """ "Finish the saying: <first half>" -> second half, on short one-line-ish fortunes."""
    out = []
    for cat in FORTUNE_TASKS:
        rng = random.Random(f"{cfg.seed}:fortune:{cat}")
        cands = []
        for i, e in enumerate(raw.fortunes.get(cat, [])):
            flat = re.sub(r"\s+", " ", e).strip()
            if len(flat) <= 240 and (cut := _split_half(flat, 6, 12)):
                cands.append((i, cut))
        chosen = _take(rng, cands, cfg.per_task)
        res.fortunes.update((cat, i) for i, _ in chosen)
        out.append(
            TaskSpec(
                f"fortune_{cat}".replace("-", "_"),
                "fortune",
                f"Finish a short saying from the '{cat}' fortune file.",
                [(f"Finish the saying: {h}\n", t) for _, (h, t) in chosen],
            )
        )
    return out


def _first_sentence(text: str, limit: int = 160) -> str | None:
    text = re.sub(r"^\d+\.\s*(\[[^\]]*\]\s*)?", "", text.split("\n")[0])
    text = re.sub(r"\{\s*([^}]*)\}", r"\1", text).strip()
    s = re.split(r"(?<=[a-z0-9)])[.;]\s", text + " ", maxsplit=1)[0].strip().rstrip(".")
    return s + "." if 10 <= len(s) <= limit else None


def dictionary_tasks(raw: RawCorpora, cfg: TaskBuildConfig, res: Reserved) -> list[TaskSpec]:
    """Jargon File and Devil's Dictionary definitions (first sentence)."""
    rng = random.Random(f"{cfg.seed}:jargon")
    jc = [(w, d) for w, body in raw.jargon if (d := _first_sentence(body))]
    jargon = _take(rng, jc, cfg.per_task)
    res.jargon.update(w for w, _ in jargon)
    rng = random.Random(f"{cfg.seed}:devil")
    dc = []
    for w, body in raw.devil:
        m = re.match(r"^[A-Z' -]+,\s*(?:[a-z]+\.\s*)+(.*)$", body.split("\n")[0])
        if m and (d := _first_sentence(m.group(1))):
            dc.append((w, d))
    devil = _take(rng, dc, cfg.per_task)
    res.devil.update(w for w, _ in devil)
    return [
        TaskSpec(
            "jargon_define",
            "hacker-lexicon",
            "Define a term from the Jargon File (first sentence).",
            [(f"Jargon File: what is '{w}'?\n", d) for w, d in jargon],
        ),
        TaskSpec(
            "devil_define",
            "hacker-lexicon",
            "Give Ambrose Bierce's Devil's Dictionary definition of a word.",
            [(f"Devil's Dictionary: define '{w}'.\n", d) for w, d in devil],
        ),
    ]


def build_tasks(
    raw: RawCorpora, cfg: TaskBuildConfig | None = None
) -> tuple[list[TaskSpec], Reserved]:
    """All tasks (sorted by name) and the entries they reserve away from the upstream set."""
    cfg = cfg or TaskBuildConfig()
    res = Reserved()
    specs = (
        wordnet_tasks(raw, cfg, res)
        + translation_tasks(raw, cfg)
        + python_tasks(raw, cfg)
        + bible_tasks(raw, cfg, res)
        + austen_tasks(raw, cfg, res)
        + fortune_tasks(raw, cfg, res)
        + dictionary_tasks(raw, cfg, res)
    )
    # A prompt repeated within a task (two senses, two verses) would make its answer ambiguous.
    for s in specs:
        s.pairs = list(dict.fromkeys({p: (p, r) for p, r in s.pairs}.values()))
    return sorted(specs, key=lambda s: s.name), res
