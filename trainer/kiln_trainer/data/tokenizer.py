"""SentencePiece BPE training with kiln's fixed special ids.

Ids: <pad> 0, <unk> 1, <s> (BOS) 2, </s> (EOS) 3, <mask> 4, then user symbols, 256 byte pieces and
merges. Normalisation is `identity` because `clean.py` already normalised the text: that way
``decode(encode(x)) == x`` for every cleaned document, Chinese included.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from kiln_api.data_config import DataSpecError, TokenizerSpec

PAD_ID, UNK_ID, BOS_ID, EOS_ID, MASK_ID = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class TokenizerInfo:
    """What the manifest records about the tokenizer."""

    vocab_size: int
    sha256: str
    bos_id: int = BOS_ID
    eos_id: int = EOS_ID
    pad_id: int = PAD_ID
    unk_id: int = UNK_ID
    mask_id: int = MASK_ID


def train_tokenizer(lines_file: Path, out_prefix: Path, spec: TokenizerSpec, num_threads: int = 0) -> TokenizerInfo:
    """Train on a file of one sentence per line; writes `<out_prefix>.model`."""
    import sentencepiece as spm

    spm.set_random_generator_seed(spec.seed)
    try:
        spm.SentencePieceTrainer.train(
            input=str(lines_file),
            model_prefix=str(out_prefix),
            model_type="bpe",
            vocab_size=spec.vocab_size,
            character_coverage=spec.character_coverage,
            byte_fallback=spec.byte_fallback,
            split_digits=spec.split_digits,
            pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
            user_defined_symbols=["<mask>", *spec.user_defined_symbols],
            input_sentence_size=spec.input_sentence_size,
            shuffle_input_sentence=True,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            # runs of spaces (indentation) become pieces; pack.WordCachedEncoder follows the same cuts
            allow_whitespace_only_pieces=True,
            max_sentence_length=16384,
            num_threads=num_threads or os.cpu_count() or 1,
            minloglevel=2,
        )
    except RuntimeError as e:
        msg = str(e)
        small = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", msg)
        if small:
            raise DataSpecError(
                f"data.tokenizer.vocab_size: {spec.vocab_size} is too small for the {small.group(2)} characters "
                "and special pieces this corpus needs; raise it (or lower character_coverage)"
            ) from e
        m = re.search(r"<= (\d+)", msg)
        if "Vocabulary size is too high" in msg or "vocab_size" in msg.lower():
            most = f" (this corpus supports at most {m.group(1)})" if m else ""
            raise DataSpecError(
                f"data.tokenizer.vocab_size: {spec.vocab_size} is larger than the corpus supports{most}; "
                "lower it or add data"
            ) from e
        raise
    model = Path(f"{out_prefix}.model")
    proc = spm.SentencePieceProcessor(model_file=str(model))
    if proc.piece_to_id("<mask>") != MASK_ID or proc.eos_id() != EOS_ID:
        raise RuntimeError(f"{model}: special ids moved (mask {proc.piece_to_id('<mask>')}, eos {proc.eos_id()})")
    return TokenizerInfo(vocab_size=proc.get_piece_size(), sha256=hashlib.sha256(model.read_bytes()).hexdigest())


def load(model_path: str | Path) -> object:
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(model_path))
