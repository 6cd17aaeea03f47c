"""Distillation: KL at temperature T against a frozen teacher, mixed with cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kiln_api.train_config import DistillConfig
from torch import nn

from kiln_trainer.train.data import IGNORE
from kiln_trainer.train.model import GPT
from kiln_trainer.train.weights import load_weights


def load_teacher(uri: str, vocab_size: int, dtype: torch.dtype, device: torch.device) -> GPT:
    """The frozen teacher; its vocabulary must match the student's (same tokenizer)."""
    cfg, state = load_weights(uri)
    if cfg.vocab_size != vocab_size:
        raise ValueError(f"distill.teacher: vocab_size {cfg.vocab_size} differs from model.vocab_size={vocab_size}")
    teacher = GPT(cfg)
    teacher.load_state_dict(state)
    teacher.to(device=device, dtype=dtype).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def kl_to_teacher(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over scored positions of KL(teacher_T || student_T) × T² (Hinton et al. scaling)."""
    keep = labels != IGNORE
    s = F.log_softmax(student[keep].float() / temperature, dim=-1)
    t = F.log_softmax(teacher[keep].float() / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature**2


class DistillLoss(nn.Module):
    """alpha · KL + (1 − alpha) · CE; also reports the KL so tests and metrics can watch it fall."""

    def __init__(self, cfg: DistillConfig, teacher: GPT) -> None:
        super().__init__()
        self.cfg, self.teacher = cfg, teacher

    def forward(self, inputs: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            t_logits = self.teacher(inputs)
        kl = kl_to_teacher(logits, t_logits, labels, self.cfg.temperature)
        ce = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE)
        return self.cfg.alpha * kl + (1 - self.cfg.alpha) * ce, kl.detach()
