"""Single-process DeepSpeed runs of tiny_cpu on real text (gloo, CPU): golden loss, resume, faults."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from kiln_api.train_config import TrainConfig
from kiln_trainer.train.commit import CheckpointError, IncompatibleCheckpoint
from kiln_trainer.train.loop import Hooks, TrainState
from kiln_trainer.train.main import run_training
from trainkit import tiny_config

GOLDEN = Path(__file__).parent / "golden" / "tiny_cpu_loss.json"
pytestmark = pytest.mark.timeout(300)


class Recorder(Hooks):
    """Records the data position each step started from and fires faults at chosen steps."""

    def __init__(self, nan_at: int | None = None, sigterm_after: int | None = None,
                 spike_at: int | None = None, crash_after: int | None = None) -> None:
        self.positions: dict[int, int] = {}
        self.nan_at, self.sigterm_after, self.spike_at, self.crash_after = nan_at, sigterm_after, spike_at, crash_after
        self.engine_params: dict[int, float] = {}

    def on_loss(self, step: int, micro: int, loss: torch.Tensor) -> torch.Tensor:
        if step == self.nan_at and micro == 0:
            return loss * float("nan")
        if step == self.spike_at:
            self.spike_at = None  # once: after the rollback the same step is clean
            return loss * 20.0
        return loss

    def after_step(self, state: TrainState, loss: float) -> None:
        self.positions[state.step] = state.position
        if state.step == self.sigterm_after:
            os.kill(os.getpid(), signal.SIGTERM)
        if state.step == self.crash_after:
            raise RuntimeError("simulated crash")


def _losses(outcome) -> list[float]:  # noqa: ANN001
    return [round(r["loss"], 4) for r in outcome.history]


def _short(tmp: Path, data: Path, steps: int, every: int, **over: dict) -> TrainConfig:
    sections = {"schedule": {"max_steps": steps, "warmup_steps": 2},
                "checkpoint": {"every_steps": every, "async_upload": False},
                "early_stop": {"eval_every_steps": 0}, "faults": {"spike_factor": 0.0}}
    for k, v in over.items():
        sections[k] = {**sections.get(k, {}), **v}
    return tiny_config(tmp, data, **sections)


def test_golden_loss_tiny_cpu(text_dataset: Path, tmp_path: Path) -> None:
    out = run_training(_short(tmp_path, text_dataset, steps=12, every=12))
    losses = _losses(out)
    if os.environ.get("KILN_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps({"preset": "tiny_cpu", "steps": 12, "loss": losses}, indent=1) + "\n")
    golden = json.loads(GOLDEN.read_text())["loss"]
    assert losses == pytest.approx(golden, abs=0.02), (losses, golden)
    assert losses[-1] < losses[0] - 0.5  # it learns


def test_resume_matches_uninterrupted_run(text_dataset: Path, tmp_path: Path) -> None:
    full_hooks = Recorder()
    full = run_training(_short(tmp_path / "a", text_dataset, steps=8, every=4), hooks=full_hooks)
    crash = Recorder(crash_after=6)
    cfg = _short(tmp_path / "b", text_dataset, steps=8, every=4)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_training(cfg, hooks=crash)
    resumed_hooks = Recorder()
    resumed = run_training(cfg, hooks=resumed_hooks)
    assert [r["step"] for r in resumed.history] == [5, 6, 7, 8]  # continues after the committed step 4
    assert _losses(resumed) == pytest.approx(_losses(full)[4:], abs=1e-3)
    # The data position of every step equals the uninterrupted run's: nothing replayed or skipped.
    assert {s: p for s, p in resumed_hooks.positions.items()} == {s: full_hooks.positions[s] for s in range(5, 9)}


def test_nan_loss_skips_the_step(text_dataset: Path, tmp_path: Path) -> None:
    snapshots: dict[int, torch.Tensor] = {}

    class Snap(Recorder):
        def after_step(self, state: TrainState, loss: float) -> None:
            snapshots[state.step] = torch.cat([p.detach().flatten().clone() for p in self.engine.module.parameters()])

    out = run_training(_short(tmp_path, text_dataset, steps=6, every=6), hooks=Snap(nan_at=3))
    assert out.state.nonfinite_steps == 1 and out.reason == "completed"
    lr_by_step = {r["step"]: r["lr"] for r in out.history}
    assert lr_by_step[4] == 0.0 and lr_by_step[5] > 0
    assert torch.equal(snapshots[3], snapshots[4])  # the poisoned step changed no weight
    assert not torch.equal(snapshots[4], snapshots[5])  # a normal step does


def test_sigterm_writes_emergency_checkpoint_and_resume_continues(text_dataset: Path, tmp_path: Path) -> None:
    cfg = _short(tmp_path, text_dataset, steps=10, every=50)
    out = run_training(cfg, hooks=Recorder(sigterm_after=3))
    # The signal lands after step 3's all-reduce; ranks agree on it at the end of step 4.
    assert out.reason == "preempted" and out.state.step == 4
    ckpts = tmp_path / "store/runs/t/checkpoints"
    assert (ckpts / "step-00000004/COMMITTED").is_file() and (ckpts / "latest").read_text() == "step-00000004"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is removed afterwards
    again = run_training(cfg)
    assert again.history[0]["step"] == 5 and again.reason == "completed"


def test_loss_spike_rolls_back_and_skips_the_window(text_dataset: Path, tmp_path: Path) -> None:
    cfg = _short(tmp_path, text_dataset, steps=10, every=3, faults={"spike_factor": 3.0, "spike_window": 3})
    hooks = Recorder(spike_at=7)
    out = run_training(cfg, hooks=hooks)
    assert out.reason == "completed" and out.state.rollbacks == 1
    g = cfg.batch.global_batch_size
    assert out.state.skip_ranges == [[7 * g, 8 * g]]  # the spiking step's sequences
    assert out.state.position == 11 * g  # 10 steps done, one window of data skipped
    steps = [r["step"] for r in out.history]
    assert steps.count(7) == 2 and steps[-1] == 10  # steps 7.. were redone from the step-6 checkpoint


def test_distillation_moves_student_toward_teacher(text_dataset: Path, tmp_path: Path) -> None:
    teacher_cfg = _short(tmp_path / "teacher", text_dataset, steps=10, every=10)
    run_training(teacher_cfg)
    teacher = f"file://{tmp_path}/teacher/store/runs/t/checkpoints"  # the run's folder: newest commit wins
    student = _short(tmp_path / "student", text_dataset, steps=8, every=8,
                     distill={"teacher": teacher, "alpha": 1.0, "temperature": 2.0}, optim={"lr": 0.01})
    out = run_training(student)
    kls = [r["kl"] for r in out.history]
    assert kls[-1] < 0.6 * kls[0], kls


def test_resume_policies_and_incompatible_config(text_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="'required' but"):
        run_training(_short(tmp_path, text_dataset, steps=2, every=2, checkpoint={"resume": "required"}))
    run_training(_short(tmp_path, text_dataset, steps=2, every=2))
    with pytest.raises(CheckpointError, match="'never' but"):
        run_training(_short(tmp_path, text_dataset, steps=4, every=2, checkpoint={"resume": "never"}))
    with pytest.raises(IncompatibleCheckpoint, match="config hash"):
        run_training(_short(tmp_path, text_dataset, steps=4, every=2, model={"d_model": 32}))


def test_metrics_progress_and_early_stop(text_dataset: Path, tmp_path: Path) -> None:
    seen: list[dict] = []
    cfg = _short(tmp_path, text_dataset, steps=40, every=40, early_stop={"eval_every_steps": 2, "patience": 1,
                                                                          "min_delta": 10.0},
                 monitor={"log_every": 1, "tensorboard": True, "progress_file": str(tmp_path / "p.json")},
                 checkpoint={"async_upload": True})
    out = run_training(cfg, progress=[seen.append])
    assert out.reason == "early_stopped" and out.state.step == 4  # 2nd eval did not improve by 10
    store = tmp_path / "store/runs/t"
    records = [json.loads(x) for x in (store / "metrics/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert {"loss", "lr", "grad_norm", "tokens_per_s", "eta_seconds"} <= set(records[-1])
    assert records[1]["val_ppl"] == pytest.approx(2.718281828 ** records[1]["val_loss"], rel=1e-6)
    progress = json.loads((store / "progress.json").read_text())
    assert progress["step"] == 4 and progress["tokens"] == 4 * 8 * 64 and progress["last_committed_step"] == 4
    assert json.loads((tmp_path / "p.json").read_text())["step"] == 4 and seen[-1]["step"] == 4
    assert (store / "checkpoints/step-00000004/COMMITTED").is_file()
    assert json.loads((store / "checkpoints/step-00000004/model_config.json").read_text())["d_model"] == 64
    assert list((tmp_path / "local/t/tb").glob("events.out.tfevents.*"))


def test_masked_lm_with_classic_block_learns(text_dataset: Path, tmp_path: Path) -> None:
    cfg = _short(tmp_path, text_dataset, steps=12, every=12, model={"arch": "classic", "objective": "masked",
                                                                   "n_kv_heads": None})
    losses = _losses(run_training(cfg))
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3, losses


def test_trains_on_a_prepared_dataset(tmp_path: Path) -> None:
    """The real data path: `kiln-trainer prepare` output (SentencePiece, shards, manifest)."""
    from kiln_trainer.data.prepare import main as prepare

    spec = (Path(__file__).resolve().parents[3] / "examples/data/tiny.yaml").read_text()
    (tmp_path / "prep.yaml").write_text(spec.replace("file:///tmp/kiln-data", f"file://{tmp_path}/prepared"))
    assert prepare(str(tmp_path / "prep.yaml")) == 0
    (dataset,) = (tmp_path / "prepared/datasets").iterdir()
    cfg = _short(tmp_path, dataset, steps=4, every=4, model={"vocab_size": 2000})
    out = run_training(cfg)
    assert out.history[-1]["loss"] < out.history[0]["loss"]
    folder = tmp_path / "store/runs/t/checkpoints/step-00000004"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["data_hash"] == dataset.name and "tokenizer.model" in manifest["files"]
    with pytest.raises(ValueError, match="^model.vocab_size: 1000 is smaller"):
        run_training(_short(tmp_path / "b", dataset, steps=4, every=4, model={"vocab_size": 1000}))


def test_bf16_with_zero1_trains_and_reports_grad_norm(text_dataset: Path, tmp_path: Path) -> None:
    cfg = _short(tmp_path, text_dataset, steps=6, every=6, precision={"bf16": True}, zero={"stage": 1},
                 monitor={"log_every": 1})
    out = run_training(cfg)
    losses = _losses(out)
    assert losses[-1] < losses[0] and all(0.0 < r["grad_norm"] < 100.0 for r in out.history)


def test_activation_checkpointing_gives_the_same_losses(text_dataset: Path, tmp_path: Path) -> None:
    plain = _losses(run_training(_short(tmp_path / "a", text_dataset, steps=3, every=3)))
    ckpt = _losses(run_training(_short(tmp_path / "b", text_dataset, steps=3, every=3,
                                       model={"activation_checkpointing": True})))
    assert ckpt == pytest.approx(plain, abs=1e-4)


def test_prometheus_endpoint_serves_training_metrics(text_dataset: Path, tmp_path: Path) -> None:
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    scraped: list[str] = []

    class Scrape(Recorder):
        def after_step(self, state: TrainState, loss: float) -> None:
            if state.step == 3:  # step 2 was logged (log_every=1): its gauges are up
                scraped.append(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode())

    run_training(_short(tmp_path, text_dataset, steps=3, every=3, monitor={"prometheus_port": port, "log_every": 1}),
                 hooks=Scrape())
    (text,) = scraped
    line = next(x for x in text.splitlines() if x.startswith('kiln_train_step{run="t"}'))
    assert float(line.split()[-1]) == 2.0
    assert 'kiln_train_loss{run="t"}' in text and 'kiln_train_tokens_per_s{run="t"}' in text


@pytest.mark.parametrize("zero", [{"stage": 2, "offload_optimizer": True},
                                  {"stage": 3, "offload_optimizer": True, "offload_params": True}])
def test_offload_runs_match_the_plain_run(text_dataset: Path, tmp_path: Path, zero: dict) -> None:
    plain = _losses(run_training(_short(tmp_path / "a", text_dataset, steps=3, every=3)))
    off = _losses(run_training(_short(tmp_path / "b", text_dataset, steps=3, every=3, zero=zero)))
    assert off == pytest.approx(plain, abs=2e-3)
