"""Where metric records go, and the warnings the brief asks for.

A record is a flat dict (step, loss, lr, grad_norm, tokens_per_s, mfu, ...). `Sinks` fans it out
to whichever sinks are configured; ranks other than 0 get no sinks at all (a null object), so the
loop never asks "am I rank 0?" when logging.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from kiln_trainer.storage import Store

log = logging.getLogger("kiln.train")

# Dense bf16 peak TFLOP/s by GPU name fragment, for MFU when monitor.peak_tflops is not given.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0}


class Sink(Protocol):
    def write(self, record: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class JsonlSink:
    """Appends records to a local JSONL file and uploads the whole file every `upload_every` records
    and on close, so the copy beside the checkpoints is never more than that far behind."""

    def __init__(self, path: Path, store: Store | None, key: str, upload_every: int = 10) -> None:
        self.path, self.store, self.key, self.upload_every = path, store, key, upload_every
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._count = 0

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record, sort_keys=True) + "\n")
        self._fh.flush()
        self._count += 1
        if self._count % self.upload_every == 0:
            self._upload()

    def _upload(self) -> None:
        if self.store is not None:
            try:
                self.store.put_file(self.key, self.path)
            except Exception as e:  # noqa: BLE001 - metrics upload must not stop training
                log.warning("metrics upload to %s failed: %s", self.key, e)

    def close(self) -> None:
        self._fh.close()
        self._upload()


class TensorBoardSink:
    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(str(log_dir))

    def write(self, record: dict[str, Any]) -> None:
        step = int(record.get("step", 0))
        for key, value in record.items():
            if key != "step" and isinstance(value, int | float) and math.isfinite(value):
                self._writer.add_scalar(f"train/{key}", value, step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class PrometheusSink:
    """Gauges `kiln_train_<field>` on rank 0's /metrics endpoint (own registry, so tests can start several)."""

    def __init__(self, port: int, run: str) -> None:
        from prometheus_client import CollectorRegistry, Gauge, start_http_server

        self._registry = CollectorRegistry()
        self._gauge_cls, self._gauges, self._run = Gauge, {}, run
        self._server, _ = start_http_server(port, registry=self._registry)

    def write(self, record: dict[str, Any]) -> None:
        for key, value in record.items():
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                if key not in self._gauges:
                    self._gauges[key] = self._gauge_cls(f"kiln_train_{key}", f"kiln trainer {key}", ["run"],
                                                        registry=self._registry)
                self._gauges[key].labels(run=self._run).set(value)

    def close(self) -> None:
        self._server.shutdown()


ProgressCallback = Callable[[dict[str, Any]], None]


class ProgressSink:
    """The compact record the operator shows (status.progress): handed to every callback."""

    FIELDS = ("step", "tokens", "loss", "tokens_per_s", "eta_seconds", "last_committed_step")

    def __init__(self, callbacks: list[ProgressCallback]) -> None:
        self.callbacks = callbacks

    def write(self, record: dict[str, Any]) -> None:
        progress = {k: record.get(k) for k in self.FIELDS}
        progress["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for cb in self.callbacks:
            try:
                cb(progress)
            except Exception as e:  # noqa: BLE001 - a failing progress sink must not stop training
                log.warning("progress sink failed: %s", e)

    def close(self) -> None:
        pass


def progress_to_store(store: Store, key: str) -> ProgressCallback:
    return lambda p: store.put_bytes(key, json.dumps(p).encode())


def progress_to_file(path: Path) -> ProgressCallback:
    def write(p: dict[str, Any]) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(p))
        tmp.replace(path)  # a reader never sees half a record

    return write


class Sinks:
    """Fan-out to all sinks; an empty list is the null object used on ranks other than 0."""

    def __init__(self, sinks: list[Sink]) -> None:
        self.sinks = sinks

    def write(self, record: dict[str, Any]) -> None:
        for s in self.sinks:
            s.write(record)

    def progress(self, record: dict[str, Any]) -> None:
        """To the progress sinks only (status.progress), e.g. a commit that finished after the last
        metrics record: the metrics history keeps one record per step."""
        for s in self.sinks:
            if isinstance(s, ProgressSink):
                s.write(record)

    def close(self) -> None:
        for s in self.sinks:
            s.close()


class Advisor:
    """Warnings the brief asks for, each returned as text (and logged) at most once per cause in a row."""

    def __init__(self, window: int = 10) -> None:
        self.losses: deque[float] = deque(maxlen=window)
        self._active: set[str] = set()

    def check(self, loss: float, grad_norm: float | None, gpu_util: float | None) -> list[str]:
        self.losses.append(loss)
        found: dict[str, str] = {}
        if len(self.losses) == self.losses.maxlen:
            mean = sum(self.losses) / len(self.losses)
            swing = (max(self.losses) - min(self.losses)) / mean if mean > 0 else 0.0
            if swing > 0.15:
                found["oscillation"] = f"loss oscillates by {swing:.0%} over the last {len(self.losses)} records (>15%)"
        if grad_norm is not None and not 0.1 <= grad_norm <= 10.0:
            found["grad_norm"] = f"grad norm {grad_norm:.3g} is outside 0.1-10"
        if gpu_util is not None and gpu_util < 85.0:
            found["gpu_util"] = f"GPU utilization {gpu_util:.0f}% is below 85%"
        new = [msg for key, msg in found.items() if key not in self._active]
        self._active = set(found)
        for msg in new:
            log.warning(msg)
        return list(found.values())


def gpu_stats() -> dict[str, float]:
    """Utilization (%) and memory used (GiB) of this process's GPU via NVML; empty without one."""
    try:
        import pynvml
        import torch

        if not torch.cuda.is_available():
            return {}
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
        util = pynvml.nvmlDeviceGetUtilizationRates(handle)
        mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
        return {"gpu_util": float(util.gpu), "gpu_mem_gib": mem.used / 2**30}
    except Exception:  # noqa: BLE001 - no NVML, no GPU stats
        return {}


def peak_flops(configured_tflops: float | None) -> float | None:
    """Peak FLOP/s of one accelerator, or None on CPU (MFU is then not reported)."""
    if configured_tflops is not None:
        return configured_tflops * 1e12
    import torch

    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for frag, tflops in PEAK_TFLOPS.items():
        if frag in name:
            return tflops * 1e12
    return None
