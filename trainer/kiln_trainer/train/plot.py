"""Loss curves from a metrics JSONL file: loss and validation loss, learning rate, grad norm."""

from __future__ import annotations

import json
from pathlib import Path


def plot_metrics(jsonl_path: str | Path, out_png: str | Path) -> Path:
    """Write a 3-panel PNG of the records in `jsonl_path`; raises if there are no loss records."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in Path(jsonl_path).read_text().splitlines() if line.strip()]
    train = [r for r in records if "loss" in r]
    if not train:
        raise ValueError(f"{jsonl_path}: no records with a 'loss' field to plot")

    def series(key: str) -> tuple[list[int], list[float]]:
        pts = [(r["step"], r[key]) for r in records if r.get(key) is not None]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig, axes = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    axes[0].plot(*series("loss"), label="train loss")
    if series("val_loss")[0]:
        axes[0].plot(*series("val_loss"), "o-", label="val loss")
    axes[0].set_ylabel("loss")
    axes[0].legend()
    axes[1].plot(*series("lr"))
    axes[1].set_ylabel("learning rate")
    axes[2].plot(*series("grad_norm"))
    axes[2].set_ylabel("grad norm")
    axes[2].set_xlabel("step")
    fig.tight_layout()
    out = Path(out_png)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
