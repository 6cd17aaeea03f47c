"""Training data: token splits as 1-D arrays, a deterministic window sampler, and masking for MLM.

The sampler's whole state is one integer, the global sequence position: step s of a run with
global batch G reads sequences [s·G, (s+1)·G) of a seeded permutation of non-overlapping windows
(re-permuted each epoch). Rank r, micro-batch a reads its slice of that range, so the order of data
per step does not depend on the world size, and resuming at position p replays and skips nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

IGNORE = -100  # label value that cross-entropy skips


class DataError(ValueError):
    """The dataset cannot be used; the message names the split or manifest field."""


@dataclass
class TokenSplits:
    """The minimal interface the trainer needs from a prepared dataset."""

    train: np.ndarray
    """1-D token ids of the training split (usually a np.memmap)."""
    val: np.ndarray
    """1-D token ids of the validation split."""
    vocab_size: int
    """The tokenizer's vocabulary size."""
    eos_id: int
    """End-of-document token (separates documents in the flat arrays)."""
    mask_id: int | None = None
    """Mask token for masked LM (None if the tokenizer has none)."""


def write_flat_dataset(
    folder: Path, splits: dict[str, np.ndarray], vocab_size: int, eos_id: int, mask_id: int | None = None
) -> None:
    """Write splits as `<split>.bin` + manifest.json (the flat format `read_flat_dataset` reads)."""
    folder.mkdir(parents=True, exist_ok=True)
    dtype = "uint16" if vocab_size <= 65536 else "uint32"
    for name, arr in splits.items():
        np.asarray(arr, dtype=dtype).tofile(folder / f"{name}.bin")
    manifest = {
        "format": "kiln-flat-tokens",
        "dtype": dtype,
        "tokenizer": {"vocab_size": vocab_size, "eos_id": eos_id, "pad_id": None, "mask_id": mask_id},
        "splits": {name: [f"{name}.bin"] for name in splits},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))


def read_flat_dataset(folder: Path, train_split: str, val_split: str) -> TokenSplits:
    """Memory-map the splits of a flat-format dataset folder."""
    path = folder / "manifest.json"
    if not path.is_file():
        raise DataError(f"data.path: no manifest.json in {folder}")
    manifest = json.loads(path.read_text())
    tok = manifest.get("tokenizer", manifest)
    for key in ("vocab_size", "eos_id"):
        if key not in tok:
            raise DataError(f"data.path: manifest.json in {folder} has no tokenizer field {key!r}")
    dtype = np.dtype(manifest.get("dtype", "uint16"))

    def load(split: str, field: str) -> np.ndarray:
        files = manifest.get("splits", {}).get(split)
        if not files:
            raise DataError(f"{field}: split {split!r} is not in {path} (has {sorted(manifest.get('splits', {}))})")
        arrays = [np.memmap(folder / f, dtype=dtype, mode="r") for f in files]
        return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)

    return TokenSplits(
        train=load(train_split, "data.train_split"),
        val=load(val_split, "data.val_split"),
        vocab_size=int(tok["vocab_size"]),
        eos_id=int(tok["eos_id"]),
        mask_id=None if tok.get("mask_id") is None else int(tok["mask_id"]),
    )


class WindowSampler:
    """Windows of seq_len+1 tokens at multiples of seq_len, in a seeded order per epoch."""

    def __init__(self, tokens: np.ndarray, seq_len: int, seed: int, *, shuffle: bool = True, split: str = "train"):
        self.tokens, self.seq_len, self.seed, self.shuffle = tokens, seq_len, seed, shuffle
        self.n_windows = (len(tokens) - 1) // seq_len
        if self.n_windows < 1:
            raise DataError(
                f"data.{split}_split: {len(tokens)} tokens are fewer than one window of batch.seq_len+1={seq_len + 1}"
            )
        self._epoch, self._perm = -1, np.arange(0)

    def _order(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._epoch = epoch
            self._perm = (
                np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)
                if self.shuffle
                else np.arange(self.n_windows)
            )
        return self._perm

    def window(self, index: int) -> np.ndarray:
        epoch, i = divmod(index, self.n_windows)
        start = int(self._order(epoch)[i]) * self.seq_len
        return np.asarray(self.tokens[start : start + self.seq_len + 1], dtype=np.int64)

    def batch(self, first: int, count: int) -> torch.Tensor:
        """Sequences first .. first+count-1 as a (count, seq_len+1) int64 tensor."""
        return torch.from_numpy(np.stack([self.window(first + i) for i in range(count)]))


def micro_batch_start(position: int, micro: int, rank: int, world: int, micro_size: int) -> int:
    """Global index of the first sequence of micro-batch `micro` on `rank` in the step starting at `position`."""
    return position + (micro * world + rank) * micro_size


def causal_inputs(windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token prediction: inputs are tokens[:-1], labels tokens[1:]."""
    return windows[:, :-1], windows[:, 1:]


def masked_inputs(
    windows: torch.Tensor, mask_id: int, vocab_size: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """BERT-style masking at a ratio drawn in [0.15, 0.25]: of the chosen positions 80% become
    mask_id, 10% a random token, 10% stay; labels are the originals there and IGNORE elsewhere."""
    tokens = windows[:, :-1]
    ratio = 0.15 + 0.10 * float(torch.rand((), generator=gen))
    chosen = torch.rand(tokens.shape, generator=gen) < ratio
    labels = torch.where(chosen, tokens, torch.full_like(tokens, IGNORE))
    roll = torch.rand(tokens.shape, generator=gen)
    inputs = tokens.clone()
    inputs[chosen & (roll < 0.8)] = mask_id
    rand_pos = chosen & (roll >= 0.8) & (roll < 0.9)
    inputs[rand_pos] = torch.randint(0, vocab_size, (int(rand_pos.sum()),), generator=gen)
    return inputs, labels, ratio


def load_splits(path: str, train_split: str, val_split: str, cache_dir: Path) -> TokenSplits:
    """Open the dataset at `path` (local path, file:// or s3://)."""
    if path.startswith("s3://"):
        from kiln_trainer.storage import open_store

        store = open_store(path)
        local = cache_dir / path.replace("s3://", "").replace("/", "_")
        for key in store.list():
            if not (local / key).is_file():
                store.get_file(key, local / key)
        return read_flat_dataset(local, train_split, val_split)
    folder = Path(path.removeprefix("file://"))
    return read_flat_dataset(folder, train_split, val_split)
