"""Training curves as one PNG: loss and validation loss, learning rate, gradient norm."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    pts = [(float(r["step"]), float(r[key])) for r in records if r.get(key) is not None and "step" in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_curves(records: list[dict[str, Any]], out: Path, title: str = "") -> Path:
    """Write the curves found in `records` (dicts with step, loss, val_loss, lr, grad_norm)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    ax = axes[0]
    for key, label in (("loss", "train loss"), ("val_loss", "validation loss")):
        xs, ys = _series(records, key)
        if xs:
            ax.plot(xs, ys, label=label, marker="o" if key == "val_loss" else None, markersize=3)
    ax.set_ylabel("loss")
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    for ax, key, label in ((axes[1], "lr", "learning rate"), (axes[2], "grad_norm", "gradient norm")):
        xs, ys = _series(records, key)
        if xs:
            ax.plot(xs, ys, color="tab:green" if key == "lr" else "tab:red")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[2].set_xlabel("step")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
