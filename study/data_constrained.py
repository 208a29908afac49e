"""The data-constrained benchmark's data: WikiText-2's validation split to train on, its test split halved.

    python study/data_constrained.py --data ../shared/data/wikitext-2 --out data/wikitext-2-constrained

Writes ``wiki.train.tokens`` (a copy of ``wiki.valid.tokens``: 217 k words, a tenth of the real
training split), ``wiki.valid.tokens`` (the first half of ``wiki.test.tokens``) and
``wiki.test.tokens`` (its second half), cut at the article boundary nearest the middle of the
test split's words, and ``manifest.json`` with each file's lines, words and sha256. The three
files take ``data.files.*`` like the standard ones (``study/run.py --train DIR`` too), with
``experiment=data_constrained``: many epochs over a small corpus, the regime where repeated data
is said to favour diffusion over autoregression (docs/results.md).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bijdiff.data.text import count_words, read_lines  # noqa: E402

ARTICLE = re.compile(r"^ = [^=].* = $")  # a top-level heading: " = Title = "


def halve_at_an_article(lines: list[str]) -> int:
    """The index of the article heading nearest the middle of the lines' words (each half starts an article)."""
    starts = [i for i, line in enumerate(lines) if ARTICLE.match(line)]
    if len(starts) < 2:
        raise SystemExit("the test file has fewer than two articles (' = Title = ' lines): it cannot be halved at one")
    total = count_words(lines)
    return min(starts[1:], key=lambda i: abs(count_words(lines[:i]) - total / 2))


def describe(path: Path) -> dict[str, object]:
    """Lines, classic word count and sha256 of a file."""
    lines = read_lines(path)
    return {"lines": len(lines), "words": count_words(lines), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def write_split(data: Path, out: Path) -> dict[str, dict[str, object]]:
    """The three files of the benchmark in ``out``, and their manifest."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(data / "wiki.valid.tokens", out / "wiki.train.tokens")
    text = (data / "wiki.test.tokens").read_text(encoding="utf-8")
    lines = text.split("\n")
    cut = halve_at_an_article(lines)
    (out / "wiki.valid.tokens").write_text("\n".join(lines[:cut]) + "\n", encoding="utf-8")
    (out / "wiki.test.tokens").write_text("\n".join(lines[cut:]), encoding="utf-8")
    manifest = {name: describe(out / name) for name in ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens")}
    manifest["source"] = {"wiki.valid.tokens": describe(data / "wiki.valid.tokens"), "wiki.test.tokens": describe(data / "wiki.test.tokens"),
                          "test_split_at_line": cut + 1}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the directory with the classic wiki.{valid,test}.tokens")
    parser.add_argument("--out", type=Path, required=True, help="where the benchmark's three files go")
    args = parser.parse_args()
    manifest = write_split(args.data, args.out)
    for name, info in manifest.items():
        if name != "source":
            print(f"{name}: {info['lines']:,} lines, {info['words']:,} words, sha256 {info['sha256']}")


if __name__ == "__main__":
    main()
