"""The training loop: one optimizer step at a time, with evaluation, checkpoints and fault handling.

Every rank runs the same code. Decisions that must agree across ranks (the step's loss, whether a
micro-batch was non-finite, whether SIGTERM arrived) come from one all-reduce per step, so all
ranks skip, roll back, stop and checkpoint together.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from kiln_api.train_config import TrainConfig

from kiln_trainer.train.checkpoint import Checkpointer
from kiln_trainer.train.data import (
    IGNORE,
    TokenSplits,
    WindowSampler,
    causal_inputs,
    masked_inputs,
    micro_batch_start,
)
from kiln_trainer.train.distill import DistillLoss
from kiln_trainer.train.faults import NonFiniteGuard, PreemptionFlag, SpikeDetector
from kiln_trainer.train.metrics import Advisor, Sinks, gpu_stats
from kiln_trainer.train.schedule import lr_at

log = logging.getLogger("kiln.train")


@dataclass
class TrainState:
    """What a checkpoint's client_state carries besides weights and optimizer (plus the config hash)."""

    step: int = 0
    position: int = 0
    tokens: int = 0
    skip_ranges: list[list[int]] = field(default_factory=list)
    nonfinite_steps: int = 0
    rollbacks: int = 0
    best_val: float = math.inf
    evals_since_best: int = 0


class Hooks:
    """Test seam: override to inject faults (a NaN loss, a spike, SIGTERM) at chosen steps."""

    engine: Any = None  # the DeepSpeed engine, bound by the Trainer

    def bind(self, engine: Any) -> None:
        self.engine = engine

    def on_loss(self, step: int, micro: int, loss: torch.Tensor) -> torch.Tensor:
        return loss

    def after_step(self, state: TrainState, loss: float) -> None:
        pass


@dataclass
class Outcome:
    reason: str  # "completed", "early_stopped", "preempted"
    state: TrainState
    history: list[dict[str, Any]]


class Trainer:
    def __init__(self, cfg: TrainConfig, engine: Any, splits: TokenSplits, ckpt: Checkpointer, sinks: Sinks,
                 *, rank: int, world: int, accum: int, device: str, flops_per_token: float,
                 peak_flops: float | None, distill: DistillLoss | None = None, hooks: Hooks | None = None) -> None:
        self.cfg, self.engine, self.ckpt, self.sinks = cfg, engine, ckpt, sinks
        self.rank, self.world, self.accum, self.device = rank, world, accum, device
        self.splits, self.distill, self.hooks = splits, distill, hooks or Hooks()
        self.train_data = WindowSampler(splits.train, cfg.batch.seq_len, cfg.data.seed, split="train")
        self.val_data = WindowSampler(splits.val, cfg.batch.seq_len, cfg.data.seed, shuffle=False, split="val")
        self.state = TrainState()
        self.total_steps = cfg.total_steps()
        self.flops_per_token, self.peak = flops_per_token, peak_flops
        self.nonfinite = NonFiniteGuard(cfg.faults.max_nonfinite_steps)
        f = cfg.faults
        self.spikes = SpikeDetector(f.spike_factor, f.spike_window, f.max_rollbacks)
        self.advisor = Advisor()
        self.history: list[dict[str, Any]] = []
        self.hooks.bind(engine)
        self.grad_norm: float | None = None

    # --- data and loss ---------------------------------------------------------------------------

    def _batch(self, sampler: WindowSampler, first: int, seed_parts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        windows = sampler.batch(first, self.cfg.batch.micro_batch_size)
        if self.cfg.model.objective == "masked":
            assert self.splits.mask_id is not None  # checked by TrainConfig.check_data
            gen = torch.Generator().manual_seed(hash(tuple([self.cfg.seed, *seed_parts])) & 0x7FFFFFFF)
            inputs, labels, _ = masked_inputs(windows, self.splits.mask_id, self.splits.vocab_size, gen)
        else:
            inputs, labels = causal_inputs(windows)
        return inputs.to(self.device), labels.to(self.device)

    def _loss(self, inputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = self.engine(inputs)
        if self.distill is not None:
            return self.distill(inputs, logits, labels)
        loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE)
        return loss, None

    def _next_position(self, pos: int) -> int:
        """Skip the data windows that caused a rolled-back loss spike."""
        for start, end in self.state.skip_ranges:
            if start <= pos < end:
                return end
        return pos

    # --- one step ----------------------------------------------------------------------------------

    def train_step(self, preempt: PreemptionFlag | None) -> tuple[float, float | None, float]:
        """One optimizer step; returns (global mean loss, mean KL or None, lr used)."""
        st, mb = self.state, self.cfg.batch.micro_batch_size
        st.position = self._next_position(st.position)
        lr = lr_at(st.step, self.total_steps, self.cfg.optim, self.cfg.schedule)
        loss_sum, kl_sum, bad = 0.0, 0.0, 0.0
        self.engine.train()
        for a in range(self.accum):
            first = micro_batch_start(st.position, a, self.rank, self.world, mb)
            inputs, labels = self._batch(self.train_data, first, [first])
            loss, kl = self._loss(inputs, labels)
            loss = self.hooks.on_loss(st.step, a, loss)
            if torch.isfinite(loss):
                loss_sum += float(loss.detach())
                kl_sum += float(kl) if kl is not None else 0.0
            else:
                # Backpropagate a zero loss from a clean forward so every rank's DeepSpeed state
                # (micro-step counters, gradient hooks) advances normally; the step is then made a
                # no-op below by a zero learning rate.
                bad += 1
                loss = self.engine(torch.zeros_like(inputs)).float().sum() * 0.0
            self.engine.backward(loss)
            if a == self.accum - 1:
                flags = torch.tensor([loss_sum, kl_sum, bad, float(preempt is not None and preempt.set)],
                                     dtype=torch.float64)
                dist.all_reduce(flags)
                loss_sum, kl_sum, bad, stop = flags.tolist()
                # The tensor-parallel ranks of one replica compute the same loss: count each replica once.
                copies = dist.get_world_size() // self.world
                loss_sum, kl_sum, bad = loss_sum / copies, kl_sum / copies, bad / copies
                for group in self.engine.optimizer.param_groups:
                    group["lr"] = 0.0 if bad else lr
                self.preempted = stop > 0
                self.grad_norm = self._grad_norm_fallback() if self._logs(st.step + 1) else None
            self.engine.step()
        good = self.accum * self.world - bad
        mean = loss_sum / good if good else math.nan
        st.position += self.cfg.batch.global_batch_size
        st.tokens += self.cfg.batch.global_batch_size * self.cfg.batch.seq_len
        st.step += 1
        if bad:
            st.nonfinite_steps += 1
            self.nonfinite.skipped(st.step, st.nonfinite_steps)
        return mean, (kl_sum / good if self.distill is not None and good else None), (0.0 if bad else lr)

    def _logs(self, step: int) -> bool:
        """Whether step `step` (1-based) writes a metrics record."""
        ev = self.cfg.early_stop.eval_every_steps
        return step % self.cfg.monitor.log_every == 0 or step == self.total_steps or bool(ev and step % ev == 0)

    def _grad_norm_fallback(self) -> float | None:
        """DeepSpeed reports no grad norm for plain fp32 data parallel (ZeRO-0); compute it here, on
        logged steps only, after the boundary backward averaged the gradients and before step()."""
        if self.cfg.zero.stage == 0 and not (self.cfg.precision.bf16 or self.cfg.precision.fp16):
            grads = [p.grad for p in self.engine.module.parameters() if p.grad is not None]
            if grads:
                return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))
        return None

    @torch.no_grad()
    def evaluate(self) -> float:
        self.engine.eval()
        mb, total, n = self.cfg.batch.micro_batch_size, 0.0, 0
        for j in range(self.cfg.early_stop.eval_batches):
            first = micro_batch_start(0, j, self.rank, self.world, mb)
            inputs, labels = self._batch(self.val_data, first, [-1, first])
            logits = self.engine(inputs)
            total += float(F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE))
            n += 1
        t = torch.tensor([total, float(n)], dtype=torch.float64)
        dist.all_reduce(t)
        self.engine.train()
        return float(t[0] / t[1])

    # --- checkpoints and faults -----------------------------------------------------------------

    def client_state(self) -> dict[str, Any]:
        return {"kiln": dataclasses.asdict(self.state), "config_hash": self.cfg.compat_hash()}

    def restore(self, client_state: dict[str, Any]) -> None:
        if client_state.get("config_hash") != self.cfg.compat_hash():
            raise ValueError("checkpoint client_state: config hash differs from this run's")
        self.state = TrainState(**client_state["kiln"])

    def save(self, last: dict[str, Any], *, sync: bool = False) -> float:
        meta = {
            "run": self.cfg.run,
            "config_hash": self.cfg.compat_hash(),
            "tokens": self.state.tokens,
            "data_hash": self.splits.data_hash,
            "metrics": {k: last.get(k) for k in ("loss", "val_loss")},
            "created_at": time.time(),
        }
        return self.ckpt.save(self.engine, self.state.step, self.client_state(), meta, sync=sync)

    def roll_back(self, span: list[int]) -> None:
        """Reload the last committed checkpoint and remember to skip the window that spiked."""
        keep_skips = [*self.state.skip_ranges, span]
        rollbacks = self.state.rollbacks + 1
        loaded = self.ckpt.load_newest(self.engine)
        if loaded is None:  # nothing committed yet: back to the weights the run started from
            self.ckpt.load_initial(self.engine)
            self.state = TrainState()
        else:
            self.restore(loaded[1])
        self.state.skip_ranges, self.state.rollbacks = keep_skips, rollbacks
        self.spikes.rolled_back()
        log.warning("loss spike: rolled back to step %d, skipping sequences %s", self.state.step, span)

    # --- the run -------------------------------------------------------------------------------

    def run(self, preempt: PreemptionFlag | None = None) -> Outcome:
        cfg, st = self.cfg, self.state
        self.spikes.rollbacks = st.rollbacks
        self.preempted = False
        last: dict[str, Any] = {}
        window_t, window_tokens, saved_at = time.perf_counter(), 0, st.step
        if cfg.faults.spike_factor and self.ckpt.last_committed is None:
            self.ckpt.save_initial(self.engine)
        while self.state.step < self.total_steps:
            st = self.state
            before = st.position
            loss, kl, lr = self.train_step(preempt)
            window_tokens += cfg.batch.global_batch_size * cfg.batch.seq_len
            if math.isfinite(loss) and self.spikes.is_spike(loss):
                if self.spikes.may_roll_back():
                    self.roll_back([before, st.position])
                    continue
                log.warning("step %d: loss spike %.3f but faults.max_rollbacks reached; going on", st.step, loss)
            record: dict[str, Any] = {"step": st.step, "loss": loss, "lr": lr, "tokens": st.tokens}
            if kl is not None:
                record["kl"] = kl
            self.hooks.after_step(st, loss)
            stop_early = self._evaluate_and_judge(record)
            last = {**last, **record}
            if self.preempted:
                stall = self.save(last, sync=True)
                left = preempt.seconds_left() if preempt else 0.0
                log.warning("emergency checkpoint at step %d committed (%.1fs, %.0fs of grace left)", st.step, stall, left)
                self.history.append(record)
                self._report_committed(last)
                return Outcome("preempted", st, self.history)
            if st.step % cfg.checkpoint.every_steps == 0 or st.step == self.total_steps or stop_early:
                record["ckpt_stall_s"] = self.save(last)
                saved_at = st.step
            if self._logs(st.step):
                elapsed = time.perf_counter() - window_t
                record.update(self._rates(window_tokens, elapsed, loss))
                window_t, window_tokens = time.perf_counter(), 0
                self.sinks.write(record)
            self.history.append(record)
            if stop_early:
                log.info("early stop at step %d: val loss did not improve for %d evaluations", st.step,
                         cfg.early_stop.patience)
                break
        if saved_at != self.state.step:
            self.save(last)
        self.ckpt.wait()
        self._report_committed(last)
        reason = "completed" if self.state.step >= self.total_steps else "early_stopped"
        return Outcome(reason, self.state, self.history)

    def _report_committed(self, last: dict[str, Any]) -> None:
        """A progress record after the last commit: records written while training name an earlier
        commit (uploads finish later), so status would stop at the last interval step."""
        committed = self.ckpt.last_committed
        if committed is None:
            return
        st = self.state
        self.sinks.progress({"step": st.step, "tokens": st.tokens, "loss": last.get("loss"), "eta_seconds": 0,
                          "last_committed_step": committed})

    def _evaluate_and_judge(self, record: dict[str, Any]) -> bool:
        """On evaluation steps add val_loss/val_ppl to the record; True when patience ran out."""
        ev, st = self.cfg.early_stop, self.state
        if not ev.eval_every_steps or st.step % ev.eval_every_steps:
            return False
        val = record["val_loss"] = self.evaluate()
        record["val_ppl"] = math.exp(min(val, 50.0))
        if val < st.best_val - ev.min_delta:
            st.best_val, st.evals_since_best = val, 0
        else:
            st.evals_since_best += 1
        return bool(ev.patience) and st.evals_since_best >= ev.patience

    def _rates(self, tokens: int, elapsed: float, loss: float) -> dict[str, Any]:
        rate = tokens / elapsed if elapsed > 0 else 0.0
        st = self.state
        out: dict[str, Any] = {
            "tokens_per_s": rate,
            "eta_seconds": (self.total_steps - st.step) * self.cfg.batch.global_batch_size * self.cfg.batch.seq_len
            / rate if rate else None,
            "last_committed_step": self.ckpt.last_committed,
            "nonfinite_steps": st.nonfinite_steps,
            "rollbacks": st.rollbacks,
        }
        grad = self.engine.get_global_grad_norm()
        grad = self.grad_norm if grad is None else grad
        if grad is not None:
            out["grad_norm"] = float(grad)
        if self.peak:
            out["mfu"] = rate * self.flops_per_token / (self.peak * self.world)
        out.update(gpu_stats())
        out["warnings"] = self.advisor.check(loss, out.get("grad_norm"), out.get("gpu_util"))
        return out
