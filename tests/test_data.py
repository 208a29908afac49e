"""Data: tokenizer layout and caching, block coverage, word counts, file and hub errors."""
from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from bijdiff.data import EOL, MASK, DataError, EvalBlocks, TrainBlocks, WikiTextDataModule, count_words, read_lines
from bijdiff.data import text as text_mod
from bijdiff.data import tokenizer as tokenizer_mod
from bijdiff.errors import ConfigError


def make_dm(wiki_files, cache: Path, **kw) -> WikiTextDataModule:
    files = {k: str(v) for k, v in wiki_files.items()}
    files.update(kw.pop("files", {}))
    return WikiTextDataModule(files=files, vocab_size=300, seq_len=16, batch_size=4, cache_dir=cache, **kw)


def test_tokenizer_layout_and_eol_joined_stream(wiki_files, tmp_path) -> None:
    dm = make_dm(wiki_files, tmp_path)
    dm.setup()
    tok = dm.tokenizer
    assert tok.token_to_id(EOL) == 0 and tok.token_to_id(MASK) == tok.get_vocab_size() - 1 == dm.num_tokens
    lines = read_lines(wiki_files["test"])
    ids = dm.splits["test"].ids
    assert int((ids == 0).sum()) == len(lines)  # one [EOL] per line, blank lines included
    assert MASK not in tok.decode(ids.tolist(), skip_special_tokens=False)
    assert dm.splits["test"].n_words == count_words(lines)


def test_second_setup_reuses_tokenizer_and_token_caches(wiki_files, tmp_path, monkeypatch, caplog) -> None:
    make_dm(wiki_files, tmp_path).setup()
    cached = sorted(p.name for p in tmp_path.iterdir())
    assert any(n.startswith("tokenizer-") for n in cached) and sum(n.startswith("tokens-") for n in cached) == 3

    def no_training(*a, **k):
        raise AssertionError("tokenizer retrained despite a cache hit")

    monkeypatch.setattr(tokenizer_mod, "train_tokenizer", no_training)
    monkeypatch.setattr("bijdiff.data.datamodule.encode_lines", no_training)
    with caplog.at_level("INFO"):
        make_dm(wiki_files, tmp_path).setup()
    assert "cache hit" in caplog.text and str(tmp_path) in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == cached


def test_cache_key_changes_with_settings_and_data(wiki_files, tmp_path) -> None:
    make_dm(wiki_files, tmp_path).setup()
    WikiTextDataModule(files={k: str(v) for k, v in wiki_files.items()}, vocab_size=290, cache_dir=tmp_path, seq_len=16).setup()
    other = tmp_path / "other.txt"
    other.write_text(wiki_files["train"].read_text() + " extra line \n")
    make_dm(wiki_files, tmp_path, files={"train": str(other)}).setup()
    assert len(list(tmp_path.glob("tokenizer-*.json"))) == 3


def test_eval_blocks_count_every_token_exactly_once() -> None:
    ids = np.arange(100)
    ds = EvalBlocks(ids, 16)
    counted = torch.cat([ds[i]["input_ids"][ds[i]["loss_mask"]] for i in range(len(ds))])
    assert sorted(counted.tolist()) == list(range(100))
    assert all(ds[i]["input_ids"].shape == (16,) for i in range(len(ds)))
    short = EvalBlocks(np.arange(5), 16)
    assert len(short) == 1 and short[0]["loss_mask"].all()
    assert len(TrainBlocks(ids, 16)) == 6


def test_missing_empty_and_undecodable_files_are_clear_errors(wiki_files, tmp_path) -> None:
    with pytest.raises(DataError, match="data file not found: .*nope.tokens"):
        make_dm(wiki_files, tmp_path, files={"train": str(tmp_path / "nope.tokens")}).setup()
    empty = tmp_path / "empty.tokens"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match="data file is empty"):
        make_dm(wiki_files, tmp_path, files={"validation": str(empty)}).setup()
    binary = tmp_path / "bin.tokens"
    binary.write_bytes(b"\xff\xfe\x00\x81" * 10)
    with pytest.raises(DataError, match="must be UTF-8"):
        make_dm(wiki_files, tmp_path, files={"test": str(binary)}).setup()


def test_missing_test_split_falls_back_to_validation_with_warning(wiki_files, tmp_path) -> None:
    files = {"train": str(wiki_files["train"]), "validation": str(wiki_files["validation"])}
    dm = WikiTextDataModule(files=files, vocab_size=300, seq_len=16, cache_dir=tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dm.setup()
    assert any("falls back to the validation split" in str(w.message) for w in caught)
    assert np.array_equal(dm.splits["test"].ids, dm.splits["validation"].ids)


def test_hub_failure_explains_the_offline_route(tmp_path, monkeypatch) -> None:
    import datasets

    def offline(*a, **k):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(text_mod, "hub_unreachable", lambda endpoint: None)  # no real probe
    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"(?s)Salesforce/wikitext.*no route to host.*data\.files\.train="):
        WikiTextDataModule(cache_dir=tmp_path).setup()


HUB_CALL = """
import time, datasets
from bijdiff.data.text import load_hub_lines
from bijdiff.errors import DataError
start = time.perf_counter()
try:
    load_hub_lines()
except DataError as err:
    print(f"{time.perf_counter() - start:.2f}\\n{err}")
"""


def test_unreachable_hub_fails_fast_and_quietly(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    with socket.socket() as closed:  # bound but not listening: connecting to it is refused at once
        closed.bind(("127.0.0.1", 0))
        env.update(HF_ENDPOINT=f"http://127.0.0.1:{closed.getsockname()[1]}", HF_HOME=str(tmp_path))
        out = subprocess.run([sys.executable, "-c", HUB_CALL], env=env, capture_output=True, text=True, timeout=300)
    assert out.stdout, out.stderr
    seconds, message = out.stdout.split("\n", 1)
    assert float(seconds) < 10, out.stderr  # the hub libraries' own retries took ~25 s
    assert env["HF_ENDPOINT"] in message and "../shared/data/wikitext-2" in message
    for key, name in (("train", "train"), ("validation", "valid"), ("test", "test")):
        assert f"data.files.{key}=$D/wiki.{name}.tokens" in message
    assert "Retrying" not in out.stderr and "thrown while requesting" not in out.stderr


@pytest.mark.parametrize("status, verdict", [(200, None), (404, None), (503, "HTTP 503")])
def test_hub_probe_accepts_any_answer_below_500(status, verdict) -> None:
    class Hub(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.send_response(status)
            self.end_headers()

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub) as server:
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        assert text_mod.hub_unreachable(f"http://127.0.0.1:{server.server_port}") == verdict
        server.shutdown()


def test_hub_probe_gives_up_on_a_silent_endpoint() -> None:
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        start = time.perf_counter()
        assert "Timeout" in text_mod.hub_unreachable(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.5)
        assert time.perf_counter() - start < 5


def test_unreachable_hub_still_reads_the_local_cache(tmp_path, monkeypatch) -> None:
    import datasets
    from datasets.arrow_writer import ArrowWriter
    from huggingface_hub import constants

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path))
    monkeypatch.setattr(text_mod, "hub_unreachable", lambda endpoint: "ConnectError: refused")
    cached = tmp_path / "Salesforce___wikitext" / "wikitext-2-v1" / "0.0.0" / "0123abcd"  # datasets' cache layout
    cached.mkdir(parents=True)
    for split in text_mod.SPLITS:
        with ArrowWriter(path=str(cached / f"wikitext-{split}.arrow")) as writer:
            writer.write_batch({"text": [f" = {split} = \n", "", " a b \n"]})
            writer.finalize()
    info = {"config_name": "wikitext-2-v1", "splits": {s: {"name": s, "num_examples": 3} for s in text_mod.SPLITS}}
    (cached / "dataset_info.json").write_text(json.dumps(info))
    flags = datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE
    assert text_mod.load_hub_lines()["test"] == ["= test =", "", "a b"]
    assert (datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE) == flags  # offline mode was only for the call


def test_vocabulary_too_small_for_bytes_and_specials(wiki_files, tmp_path) -> None:
    with pytest.raises(ConfigError, match="data.vocab_size=100 is too small"):
        WikiTextDataModule(files={k: str(v) for k, v in wiki_files.items()}, vocab_size=100, cache_dir=tmp_path).setup()


def test_unigram_counts_cover_training_tokens(wiki_files, tmp_path) -> None:
    dm = make_dm(wiki_files, tmp_path)
    dm.setup()
    counts = dm.unigram_counts()
    assert counts.shape == (dm.num_tokens,) and counts.sum() == dm.splits["train"].n_tokens
