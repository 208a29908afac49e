"""WikiText-2 loading, byte-level BPE tokenisation and block datasets."""
from .blocks import EvalBlocks, TrainBlocks
from .datamodule import TokenizedSplit, WikiTextDataModule, unigram_nll
from ..errors import DataError
from .text import count_words, read_lines
from .tokenizer import EOL, MASK

__all__ = [
    "EOL",
    "MASK",
    "DataError",
    "EvalBlocks",
    "TokenizedSplit",
    "TrainBlocks",
    "WikiTextDataModule",
    "count_words",
    "read_lines",
    "unigram_nll",
]
