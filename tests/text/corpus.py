"""Real multilingual text for the text tests: Debian's fortunes packages, one line a sentence.

English from `fortunes`, the others from `fortunes-de/-es/-it/-ru/-zh` (UTF-8 files only).
Entries are separated by lines holding `%`; each stripped line of 3+ chars is a sentence,
deduplicated, in a fixed order (sorted by file, then by position).
"""
from __future__ import annotations

import functools
import os
import random
import subprocess

PACKAGES = {"en": "fortunes", "de": "fortunes-de", "es": "fortunes-es", "it": "fortunes-it",
            "ru": "fortunes-ru", "zh": "fortunes-zh"}
ROOT = "/usr/share/games/fortunes"


def _files(lang: str) -> list[str]:
    out = subprocess.run(["dpkg", "-L", PACKAGES[lang]], capture_output=True, text=True,
                         timeout=30).stdout.split("\n")
    files = sorted(f for f in out if f.startswith(ROOT) and os.path.isfile(f)
                   and not f.endswith(".dat"))
    if lang == "en":
        return [f for f in files if os.path.dirname(f) == ROOT]
    if lang == "zh":
        return [f for f in files if f.endswith(".u8")]
    if lang == "it":
        return [f for f in files if f.startswith(f"{ROOT}/it/") and f.endswith(".u8")]
    return [f for f in files if f.startswith(f"{ROOT}/{lang}/")]


def available() -> bool:
    try:
        return all(_files(lang) for lang in PACKAGES)
    except (OSError, subprocess.SubprocessError):
        return False


@functools.lru_cache(maxsize=None)
def sentences(lang: str) -> tuple[str, ...]:
    """Every distinct sentence (line) of the language's fortunes."""
    seen: dict[str, None] = {}
    for path in _files(lang):
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
        for entry in text.split("\n%\n"):
            for line in entry.split("\n"):
                line = line.strip()
                if len(line) >= 3 and line != "%":
                    seen.setdefault(line, None)
    return tuple(seen)


def sample(lang: str, n: int, seed: int = 0) -> list[str]:
    """`n` sentences drawn without replacement under a fixed seed."""
    pool = list(sentences(lang))
    random.Random(seed).shuffle(pool)
    return pool[:n]


def entries(lang: str, n: int, seed: int = 0) -> list[str]:
    """Whole multi-line fortunes (newlines, tabs and runs of spaces kept)."""
    out = []
    for path in _files(lang):
        with open(path, "rb") as f:
            out.extend(e for e in f.read().decode("utf-8", errors="replace").split("\n%\n")
                       if e.strip())
    random.Random(seed).shuffle(out)
    return out[:n]
