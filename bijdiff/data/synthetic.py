"""Small generated text in the classic WikiText layout: for tests and for machines without the data."""
from __future__ import annotations

import random
from pathlib import Path

WORDS = ("the cat dog sat on a mat and ran to big red house with <unk> @-@ of in is was "
         "river city song film game team year first new one two three = , .").split()


def synthetic_wikitext(n_lines: int, seed: int) -> str:
    """``n_lines`` lines of random words: blank lines, ``= Title =`` headings and sentences, as in WikiText."""
    rng = random.Random(seed)
    lines = []
    for i in range(n_lines):
        if i % 7 == 0:
            lines.append(" ")
        elif i % 7 == 1:
            lines.append(f" = {rng.choice(WORDS).title()} {rng.choice(WORDS)} = ")
        else:
            lines.append(" " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30))) + " ")
    return "\n".join(lines) + "\n"


def write_synthetic_splits(directory: Path, lines: tuple[int, int, int] = (400, 60, 70)) -> dict[str, Path]:
    """The classic files ``wiki.{train,valid,test}.tokens``, of ``lines`` lines each, in ``directory``;
    ``{split: path}`` with the splits named as ``data.files`` names them (``train``, ``validation``, ``test``)."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {}
    for (split, name, n), seed in zip(zip(("train", "validation", "test"), ("train", "valid", "test"), lines), range(3)):
        files[split] = directory / f"wiki.{name}.tokens"
        files[split].write_text(synthetic_wikitext(n, seed), encoding="utf-8")
    return files
