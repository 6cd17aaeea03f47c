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
    tokenizer_path: Path | None = None
    """The tokenizer model file; copied into every checkpoint so export finds it there."""
    data_hash: str | None = None
    """The prepared dataset's content hash, recorded in checkpoint manifests."""


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


BYTE_EOS, BYTE_MASK, BYTE_VOCAB = 256, 257, 258


def write_byte_dataset(folder: Path, documents: list[str], val_every: int = 20) -> None:
    """A tokenizer-free dataset: UTF-8 bytes as token ids (EOS 256, mask 257), every
    `val_every`-th document in the validation split. For smoke runs, tests and benchmarks."""
    splits: dict[str, list[int]] = {"train": [], "val": []}
    for i, doc in enumerate(documents):
        splits["val" if i % val_every == 0 else "train"].extend([*doc.encode("utf-8"), BYTE_EOS])
    arrays = {k: np.asarray(v, dtype=np.uint16) for k, v in splits.items()}
    write_flat_dataset(folder, arrays, vocab_size=BYTE_VOCAB, eos_id=BYTE_EOS, mask_id=BYTE_MASK)


def bundled_documents() -> list[str]:
    """The English and Chinese stories shipped with the data step, one document per paragraph."""
    corpus = Path(__file__).resolve().parent.parent / "data" / "corpus"
    docs: list[str] = []
    for name in ("en_stories.txt", "zh_stories.txt"):
        docs.extend(p.strip() for p in (corpus / name).read_text(encoding="utf-8").split("\n\n") if p.strip())
    return docs


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
        return as_tokens([np.memmap(folder / f, dtype=dtype, mode="r") for f in files])

    return _splits(tok, load(train_split, "data.train_split"), load(val_split, "data.val_split"))


def _splits(tok: dict, train: np.ndarray, val: np.ndarray, **extra: object) -> TokenSplits:
    """TokenSplits from a manifest's tokenizer section."""
    mask = tok.get("mask_id")
    return TokenSplits(train=train, val=val, vocab_size=int(tok["vocab_size"]), eos_id=int(tok["eos_id"]),
                       mask_id=None if mask is None else int(mask), **extra)  # type: ignore[arg-type]


class ShardedTokens:
    """Several memory-mapped shards read as one 1-D token array (len and slices only), so a large
    dataset is never copied into memory."""

    def __init__(self, shards: list[np.ndarray]) -> None:
        self.shards = [s for s in shards if len(s)]
        self.starts = np.cumsum([0] + [len(s) for s in self.shards])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, key: slice) -> np.ndarray:
        start, stop, _ = key.indices(len(self))
        first = int(np.searchsorted(self.starts, start, side="right")) - 1
        pieces, pos = [], start
        while pos < stop and first < len(self.shards):
            off = pos - int(self.starts[first])
            take = min(stop - pos, len(self.shards[first]) - off)
            pieces.append(np.asarray(self.shards[first][off : off + take]))
            pos, first = pos + take, first + 1
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


def as_tokens(shards: list[np.ndarray]) -> np.ndarray:
    """One shard as is, several as a ShardedTokens view (typed as an array: len + slicing)."""
    return shards[0] if len(shards) == 1 else ShardedTokens(shards)  # type: ignore[return-value]


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
    """Open the dataset at `path` (local path, file:// or s3://): a dataset from `kiln-trainer
    prepare` (shards verified against their sha256) or the flat format of `write_flat_dataset`."""
    local = Path(path.removeprefix("file://"))
    if not path.startswith("s3://") and (local / "manifest.json").is_file():
        if json.loads((local / "manifest.json").read_text()).get("format") == "kiln-flat-tokens":
            return read_flat_dataset(local, train_split, val_split)
    from kiln_trainer.data.shards import open_dataset

    ds = open_dataset(path, cache_dir=cache_dir)
    tok = ds.manifest["tokenizer"]

    def split(name: str, field: str) -> np.ndarray:
        try:
            arrays = ds.tokens(name)
        except KeyError as e:
            raise DataError(f"{field}: {e.args[0]}") from e
        return as_tokens(list(arrays))

    return _splits(tok, split(train_split, "data.train_split"), split(val_split, "data.val_split"),
                   tokenizer_path=ds.tokenizer_path if ds.tokenizer_path.is_file() else None,
                   data_hash=ds.manifest.get("data_hash"))
