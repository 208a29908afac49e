"""Byte-level BPE trained on the training split, cached on disk by settings and data hash."""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from ..errors import ConfigError
from ..io import atomic_path

log = logging.getLogger(__name__)

EOL = "[EOL]"
MASK = "[MASK]"
SPECIAL_TOKENS = (EOL, MASK)


def tokenizer_key(vocab_size: int, data_digest: str) -> str:
    """Cache key of a tokenizer: its settings and the training data's hash."""
    settings = json.dumps({"kind": "bytelevel-bpe", "vocab_size": vocab_size, "specials": SPECIAL_TOKENS, "v": 1})
    return hashlib.sha256((settings + data_digest).encode()).hexdigest()[:16]


def train_tokenizer(lines: Sequence[str], vocab_size: int) -> Tokenizer:
    """Train byte-level BPE with ``[EOL]`` as id 0 and ``[MASK]`` as the last id (``vocab_size − 1``)."""
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ConfigError(
            f"data.vocab_size={vocab_size} is too small: byte-level BPE needs 256 byte tokens plus "
            f"{len(SPECIAL_TOKENS)} special tokens ({', '.join(SPECIAL_TOKENS)})"
        )
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 1,
        special_tokens=[EOL],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((line for line in lines if line), trainer=trainer)
    tok.add_special_tokens([MASK])
    if tok.token_to_id(MASK) != tok.get_vocab_size() - 1 or tok.token_to_id(EOL) != 0:
        raise RuntimeError("tokenizer special-token layout broken: expected [EOL]=0 and [MASK]=last id")
    return tok


def load_or_train_tokenizer(lines: Sequence[str], vocab_size: int, data_digest: str, cache_dir: Path) -> Tokenizer:
    """Return the cached tokenizer for these settings and data, training and saving it if absent."""
    path = Path(cache_dir) / f"tokenizer-{tokenizer_key(vocab_size, data_digest)}.json"
    if path.is_file():
        log.info("tokenizer: cache hit %s", path)
        return Tokenizer.from_file(str(path))
    log.info("tokenizer: training byte-level BPE (vocab %d) on %d lines", vocab_size, len(lines))
    tok = train_tokenizer(lines, vocab_size)
    with atomic_path(path) as tmp:
        tok.save(str(tmp))
    log.info("tokenizer: saved to %s", path)
    return tok


def encode_lines(tok: Tokenizer, lines: Sequence[str]) -> list[int]:
    """Token ids of the lines, each followed by ``[EOL]``: the stream that is cut into blocks."""
    eol = tok.token_to_id(EOL)
    ids: list[int] = []
    for enc in tok.encode_batch(list(lines), add_special_tokens=False):
        ids.extend(enc.ids)
        ids.append(eol)
    return ids


def decode_ids(tok: Tokenizer, ids: Sequence[int]) -> str:
    """Text of token ids, ``[EOL]`` as a newline: the inverse of ``encode_lines``."""
    eol = tok.token_to_id(EOL)
    lines: list[list[int]] = [[]]
    for i in ids:
        if i == eol:
            lines.append([])
        else:
            lines[-1].append(i)
    return "\n".join(tok.decode(line) for line in lines)


def encode_text(tok: Tokenizer, text: str) -> list[int]:
    """Token ids of a piece of text, newlines as ``[EOL]`` (none after the last line): the inverse of ``decode_ids``."""
    return encode_lines(tok, text.split("\n"))[:-1] if text else []
