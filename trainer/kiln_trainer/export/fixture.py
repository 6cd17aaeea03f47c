"""A small, real committed checkpoint for tests, the serving bench and demos.

`make_checkpoint_tree(root)` trains a SentencePiece tokenizer on generated sentences, trains the
trainer's GPT for a few DeepSpeed steps (ZeRO stage 2, one CPU rank, in a subprocess so the caller's
process never initialises torch.distributed), and lays the result out like the trainer does:
`<root>/runs/<run>/checkpoints/step-XXXXXXXX/`, committed with the trainer's own protocol code
(files, parts, manifest.json with sha256 per file, COMMITTED, `latest`). The tokenizer is stored in
the checkpoint folder too (real runs take it from the dataset, see ExportConfig.dataset_uri).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

from kiln_trainer.storage import open_store
from kiln_trainer.train.commit import RunCheckpoints

NOUNS = "cat dog bird fish tree house river".split()
VERBS = "sees likes finds follows".split()
ADJS = "small big red blue green".split()


def corpus(n_sentences: int = 600, seed: int = 0) -> str:
    """Template sentences: structured enough that a few training steps give varied greedy output."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n_sentences):
        a, b = rng.sample(NOUNS, 2)
        lines.append(f"the {rng.choice(ADJS)} {a} {rng.choice(VERBS)} the {b} near the {rng.choice(NOUNS)}.")
    return "\n".join(lines)


def train_tokenizer(text: str, dest: Path, vocab_size: int = 96) -> Path:
    import sentencepiece as spm

    src = dest.parent.parent / f".{dest.parent.name}-tok-corpus.txt"
    src.write_text(text)
    spm.SentencePieceTrainer.train(
        input=str(src), model_prefix=str(dest.with_suffix("")), vocab_size=vocab_size, model_type="bpe",
        character_coverage=1.0, bos_id=-1, eos_id=1, unk_id=0, pad_id=-1, minloglevel=2,
    )
    return dest


_TRAIN = r"""
import json, os, sys, torch
os.environ.update(DS_ACCELERATOR="cpu", MASTER_ADDR="127.0.0.1", RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
import deepspeed
from kiln_api.train_config import ModelConfig
from kiln_trainer.train.model import GPT
out, cfg_json, tokens_path, steps, stage = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
deepspeed.init_distributed(dist_backend="gloo")
torch.manual_seed(0)
model = GPT(ModelConfig(**json.loads(cfg_json)))
ds = {"train_batch_size": 8, "train_micro_batch_size_per_gpu": 8, "zero_optimization": {"stage": stage},
      "optimizer": {"type": "AdamW", "params": {"lr": 1e-2, "torch_adam": True}}}
engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=ds)
tokens = torch.tensor(json.load(open(tokens_path)))
seq = model.cfg.max_seq_len // 2
for step in range(steps):
    idx = torch.randint(0, len(tokens) - seq - 1, (8,))
    batch = torch.stack([tokens[i : i + seq + 1] for i in idx])
    logits = engine(batch[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
    engine.backward(loss)
    engine.step()
engine.save_checkpoint(out, tag=sys.argv[6], save_latest=False)
print(json.dumps({"loss": float(loss)}))
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_checkpoint_tree(
    root: Path, run: str = "tiny", step: int = 60, zero_stage: int = 2, model: dict | None = None,
) -> Path:
    """Create the run's checkpoints folder under `root`; returns `<root>/runs/<run>/checkpoints`."""
    import sentencepiece as spm

    ckroot = root / "runs" / run / "checkpoints"
    local = root / f".{run}-local"
    folder = local / f"step-{step:08d}"  # the trainer's local save folder, uploaded below
    folder.mkdir(parents=True, exist_ok=True)
    text = corpus()
    tok = train_tokenizer(text, folder / "tokenizer.model")
    sp = spm.SentencePieceProcessor(model_file=str(tok))
    cfg = {"vocab_size": 96, "d_model": 48, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "max_seq_len": 64}
    cfg.update(model or {})
    (folder / "model_config.json").write_text(json.dumps(cfg, indent=2))
    tokens_path = root / f".{run}-tokens.json"
    tokens_path.write_text(json.dumps(sp.encode(text)))
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "MASTER_PORT": str(_free_port())}
    res = subprocess.run(
        [sys.executable, "-c", _TRAIN, str(local), json.dumps(cfg), str(tokens_path), str(step), str(zero_stage), folder.name],
        env=env, capture_output=True, text=True, timeout=600,
    )
    if res.returncode != 0:
        raise RuntimeError(f"fixture training failed:\n{res.stderr[-3000:]}")
    loss = json.loads(res.stdout.strip().splitlines()[-1])["loss"]
    # Commit exactly as the trainer does (its protocol code), so export reads the real format.
    ckpts = RunCheckpoints(open_store(f"file://{root}"), f"runs/{run}/checkpoints")
    part = ckpts.upload_part(step, 0, "fixture", [p for p in folder.iterdir() if p.is_file()])
    ckpts.commit(step, [part], {"run": run, "metrics": {"loss": loss, "val_loss": loss}, "data_hash": "fixture-" + run})
    return ckroot


if __name__ == "__main__":
    print(make_checkpoint_tree(Path(sys.argv[1])))
