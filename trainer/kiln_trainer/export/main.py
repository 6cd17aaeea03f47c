"""`kiln-trainer export --config FILE`: checkpoint → one Triton model repository version.

Reads top-down: parse config → pick and verify the checkpoint → consolidate → stage the version
folder → reference outputs and perplexity → with `int8`, quantize and gate on perplexity → upload.
The version's variant (float32, bfloat16 or int8) is written in its manifest, never in the model
name: the target's name serves whatever variant was rolled out. An INT8 variant over the perplexity
bound publishes nothing and exits with the contract's EXIT_QUANTIZATION_REJECTED. The staging folder
is removed in `finally`; nothing is uploaded unless every step before succeeded.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml
from kiln_api import contract
from kiln_api.export_config import ExportConfig, ExportConfigError

from kiln_trainer.export.consolidate import (
    CheckpointRef,
    ExportError,
    consolidate,
    download_verified,
    find_one,
    resolve_checkpoint,
    sha256_file,
)
from kiln_trainer.export.hf import unsupported_reason, write_hf
from kiln_trainer.export.quantize import perplexity, quantize_state_dict, tensor_bytes, windows
from kiln_trainer.export.repository import pick_version, write_version
from kiln_trainer.serving.generate import SamplingParams, generate
from kiln_trainer.serving.loader import MODEL_CONFIG, TIED_HEAD, TOKENIZER, WEIGHTS, Served, load_version
from kiln_trainer.storage import NotFound, Store, StoreError, open_store

if TYPE_CHECKING:
    from kiln_trainer.data.shards import Dataset

INT8_SERVING_MODE = "int8"
"""Recorded in an INT8 version's manifest: the server keeps the weights int8 (serving/int8.py)."""


def load_config(path: str) -> ExportConfig:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError as e:
        raise ExportConfigError(f"--config: {path} does not exist") from e
    return ExportConfig.from_dict(data)


def _model_py() -> Path:
    return Path(__file__).resolve().parent.parent / "serving" / "model.py"


def stage_version(
    folder: Path, sd: dict[str, torch.Tensor], model_config: Path, tokenizer: Path, dtype: str
) -> None:
    """Write weights, model config, tokenizer and model.py into a local version folder."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    cast = {k: (v.to(getattr(torch, dtype)) if v.is_floating_point() else v) for k, v in sd.items()}
    save_file(cast, str(folder / WEIGHTS), metadata={"format": "pt"})
    shutil.copyfile(model_config, folder / MODEL_CONFIG)
    shutil.copyfile(tokenizer, folder / TOKENIZER)
    shutil.copyfile(_model_py(), folder / "model.py")


def reference_outputs(served: Served, prompts: tuple[str, ...], max_new: int) -> list[dict[str, Any]]:
    """Greedy continuations the rollout gate compares the served model against."""
    out = []
    for prompt in prompts:
        ids = served.encode(prompt)
        n = min(max_new, served.context_length - len(ids))
        if n < 1:
            raise ExportError(f"reference_prompts: {prompt[:40]!r} does not fit the model context")
        toks = generate(served.model, ids, SamplingParams(max_new_tokens=n, stop_token_id=served.eos_id))
        out.append({"prompt": prompt, "prompt_ids": ids, "max_new_tokens": n, "token_ids": toks,
                    "text": served.decode(toks)})
    return out


def eval_ppl(served: Served, tokens: list[int]) -> float:
    model = served.model
    return perplexity(lambda ids: model(ids, use_cache=False)[0], windows(tokens, served.context_length))


def _fetch(uri: str, dest: Path, field: str) -> Path:
    parent, _, name = uri.rpartition("/")
    try:
        open_store(parent).get_file(name, dest)
    except NotFound as e:
        raise ExportError(f"{field}: {uri} does not exist") from e
    return dest


def _open_dataset(cfg: ExportConfig, work: Path) -> Dataset | None:
    if cfg.dataset_uri is None:
        return None
    from kiln_trainer.data.shards import open_dataset

    try:
        return open_dataset(cfg.dataset_uri, cache_dir=work / "cache")
    except (FileNotFoundError, NotFound) as e:
        raise ExportError(f"dataset_uri: {e}") from e


def _eval_tokens(cfg: ExportConfig, served: Served, dataset: Dataset | None, work: Path) -> tuple[list[int], str]:
    """Tokens for the perplexity check and where they came from."""
    if cfg.eval_text_uri is not None:
        text = _fetch(cfg.eval_text_uri, work / "eval.txt", "eval_text_uri").read_text(encoding="utf-8")
        return served.encode(text)[: cfg.eval_max_tokens], cfg.eval_text_uri
    if dataset is not None:
        try:
            shards = dataset.tokens("val")
        except KeyError as e:
            raise ExportError(f"dataset_uri: {e.args[0]}; set eval_text_uri instead") from e
        tokens: list[int] = []
        for shard in shards:
            tokens.extend(int(t) for t in shard[: cfg.eval_max_tokens - len(tokens)])
            if len(tokens) >= cfg.eval_max_tokens:
                break
        return tokens, f"{cfg.dataset_uri} (val split)"
    return served.encode("\n".join(cfg.reference_prompts)), "reference_prompts"


def _fetch_tokenizer(cfg: ExportConfig, ckpt: Path, dataset: Dataset | None, work: Path, ref_uri: str) -> Path:
    if cfg.tokenizer_uri:
        return _fetch(cfg.tokenizer_uri, work / TOKENIZER, "tokenizer_uri")
    if dataset is not None:
        if not dataset.tokenizer_path.is_file():
            raise ExportError(f"dataset_uri: {cfg.dataset_uri} has no {TOKENIZER}")
        return dataset.tokenizer_path
    found = find_one(ckpt, TOKENIZER)
    if found is None:
        raise ExportError(f"tokenizer_uri: neither tokenizer_uri nor dataset_uri is set and checkpoint {ref_uri} has no {TOKENIZER}")
    return found


def _manifest(cfg: ExportConfig, ref: CheckpointRef, ref_uri: str, folder: Path,
              refs: list[dict[str, Any]], ppl: float, extra: dict[str, Any]) -> dict[str, Any]:
    ck = ref.manifest
    return {
        "run": cfg.run_name,
        "checkpoint": {"uri": ref_uri, "step": ref.step, "choice": cfg.checkpoint},
        "data_hash": ck.get("data_hash") or (ck.get("data") or {}).get("hash"),
        "weights_sha256": sha256_file(folder / WEIGHTS),
        "files": {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()},
        "weights_bytes": (folder / WEIGHTS).stat().st_size,
        "eval": {"val_loss": ref.val_loss, "checkpoint_metrics": ck.get("metrics"), "export_ppl": ppl},
        "reference_outputs": refs,
        "created_unix": int(time.time()),
        **extra,
    }


class QuantizationRejected(ExportError):
    """The INT8 variant's perplexity is over the bound: nothing is published, the run must not roll out."""


@dataclass
class Staged:
    """A version folder ready for upload, with what its manifest needs."""

    folder: Path
    served: Served
    refs: list[dict[str, Any]]
    ppl: float


def _checkpoint_inputs(cfg: ExportConfig, work: Path) -> tuple[CheckpointRef, str, Path, Path, Dataset | None]:
    """Pick and verify the checkpoint; find its model config and the tokenizer."""
    src = open_store(cfg.checkpoints_uri)
    ref = resolve_checkpoint(src, cfg.checkpoint)
    ref_uri = src.uri(ref.folder)
    print(f"[export] checkpoint {ref_uri} (step {ref.step})", flush=True)
    ckpt = download_verified(src, ref, work / "ckpt")
    model_config = find_one(ckpt, MODEL_CONFIG)
    if model_config is None:
        raise ExportError(f"checkpoint {ref_uri} has no {MODEL_CONFIG}")
    dataset = _open_dataset(cfg, work)
    return ref, ref_uri, model_config, _fetch_tokenizer(cfg, ckpt, dataset, work, ref_uri), dataset


def run_export(cfg: ExportConfig, work: Path) -> dict[str, Any]:
    """Everything but config parsing; returns a summary of what was published."""
    ref, ref_uri, model_config, tokenizer, dataset = _checkpoint_inputs(cfg, work)
    cfg_dict = json.loads(model_config.read_text())
    sd = consolidate(work / "ckpt")
    if cfg_dict.get("tie_embeddings", True):
        sd.pop(TIED_HEAD, None)  # shares storage with the embedding; safetensors stores it once
    fp = _stage(cfg, work / "fp", sd, model_config, tokenizer, cfg.dtype)
    eval_tokens, eval_source = _eval_tokens(cfg, fp.served, dataset, work)
    fp.ppl = eval_ppl(fp.served, eval_tokens)
    print(f"[export] perplexity {fp.ppl:.4f} on {len(eval_tokens)} tokens of {eval_source}", flush=True)
    extra: dict[str, Any] = {"dtype": cfg.dtype, "eval_source": eval_source, "eval_tokens": len(eval_tokens)}
    if dataset is not None:
        extra["data_hash"] = dataset.manifest.get("data_hash")
    hf_reason = unsupported_reason(cfg_dict) if cfg.hf_export else "hf_export: false"
    published = fp
    if cfg.int8:
        # The INT8 variant replaces the full-precision one as the version the target serves; the
        # full-precision perplexity stays its baseline (and the hf/ folder stays full precision).
        published, extra["int8"] = _int8_variant(cfg, sd, model_config, tokenizer, work, fp.ppl, eval_tokens)
    if hf_reason is None:
        write_hf(sd, cfg_dict, published.folder / "hf")
    extra["hf"] = {"written": hf_reason is None, "reason": hf_reason}
    extra["variant"] = extra["dtype"] = cfg.variant

    repo = open_store(cfg.model_repository)
    version = pick_version(repo, cfg.model_name, cfg.version)
    manifest = _manifest(cfg, ref, ref_uri, published.folder, published.refs, published.ppl, extra)
    uri = _upload(repo, cfg.model_name, version, published.folder, manifest)
    return {"model": cfg.model_name, "version": version, "variant": cfg.variant, "uri": uri,
            "ppl": published.ppl, "int8": extra.get("int8")}


def _stage(cfg: ExportConfig, folder: Path, sd: dict[str, torch.Tensor], model_config: Path, tokenizer: Path,
           dtype: str, weights: dict[str, torch.Tensor] | None = None) -> Staged:
    """Write the version folder, load it back as the server will, and record reference outputs."""
    from safetensors.torch import save_file

    stage_version(folder, sd, model_config, tokenizer, dtype)
    if weights is not None:  # pre-quantized tensors replace the plain ones
        save_file(weights, str(folder / WEIGHTS), metadata={"format": "pt"})
    # load_version wants a manifest; this placeholder is replaced by the real one at upload.
    (folder / "manifest.json").write_text(json.dumps({"int8": {"serving_mode": INT8_SERVING_MODE}} if weights else {}))
    served = load_version(folder, verify=False)
    (folder / "manifest.json").unlink()
    return Staged(folder, served, reference_outputs(served, cfg.reference_prompts, cfg.reference_max_new_tokens), 0.0)


def _upload(repo: Store, model: str, version: int, folder: Path, manifest: dict[str, Any]) -> str:
    files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
    return write_version(repo, model, version, files, json.dumps(manifest, indent=2).encode())


def _int8_variant(cfg: ExportConfig, sd: dict[str, torch.Tensor], model_config: Path, tokenizer: Path,
                  work: Path, ppl_fp: float, eval_tokens: list[int]) -> tuple[Staged, dict[str, Any]]:
    """Quantize and measure perplexity against full precision; over the bound is QuantizationRejected."""
    q = quantize_state_dict(sd)
    staged = _stage(cfg, work / "int8", sd, model_config, tokenizer, "float32", weights=q)
    staged.ppl = eval_ppl(staged.served, eval_tokens)
    increase = staged.ppl / ppl_fp - 1.0
    info = {
        "serving_mode": INT8_SERVING_MODE,
        "size_ratio_vs_fp32": tensor_bytes(q) / tensor_bytes(sd),
        "ppl": staged.ppl,
        "ppl_full_precision": ppl_fp,
        "ppl_increase": increase,
        "max_ppl_increase": cfg.max_ppl_increase,
    }
    accepted = increase <= cfg.max_ppl_increase
    print(f"[export] int8: size x{info['size_ratio_vs_fp32']:.3f}, ppl {staged.ppl:.4f} vs {ppl_fp:.4f} "
          f"({increase:+.2%}, bound {cfg.max_ppl_increase:.0%}) -> {'accepted' if accepted else 'rejected'}",
          flush=True)
    if not accepted:
        raise QuantizationRejected(
            f"INT8 perplexity {staged.ppl:.4f} is {increase:+.2%} over full precision {ppl_fp:.4f} "
            f"(bound max_ppl_increase {cfg.max_ppl_increase:.2%}); nothing was published")
    return staged, info


def _terminate(message: str) -> None:
    """Leave `message` where Kubernetes reads a container's termination message (only inside a pod)."""
    path = Path(contract.TERMINATION_LOG)
    if path.exists():
        try:
            path.write_text(message[:4000])  # the kubelet keeps at most 4096 bytes
        except OSError:
            pass  # a read-only or foreign file: the exit code alone still says what happened


def main(config_path: str) -> int:
    """Entry point of `kiln-trainer export`; the pod contract's exit codes: EXIT_BAD_CONFIG on bad input
    (a retry cannot help), EXIT_QUANTIZATION_REJECTED when the INT8 variant fails its perplexity bound
    (neither can), EXIT_FAILED on a storage failure (a retry may)."""
    try:
        cfg = load_config(config_path)
        print("[export] config " + json.dumps(dataclasses.asdict(cfg), sort_keys=True), flush=True)
        with tempfile.TemporaryDirectory(prefix="kiln-export-") as tmp:
            summary = run_export(cfg, Path(tmp))
    except QuantizationRejected as e:
        print(f"export failed: QuantizationRejected: {e}", file=sys.stderr)
        _terminate(f"QuantizationRejected: {e}")
        return contract.EXIT_QUANTIZATION_REJECTED
    except (ExportConfigError, ExportError) as e:
        print(f"export failed: {e}", file=sys.stderr)
        _terminate(str(e))
        return contract.EXIT_BAD_CONFIG
    except StoreError as e:
        print(f"export failed (storage): {e}", file=sys.stderr)
        return contract.EXIT_FAILED
    print(json.dumps({"exported": summary}), flush=True)
    return 0


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="kiln-trainer export")
    parser.add_argument("--config", required=True, help="export config (YAML or JSON)")
    raise SystemExit(main(parser.parse_args().config))
