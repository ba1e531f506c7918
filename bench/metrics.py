"""Loss and error (docs/TASKS.md, "Metrics"): masked sigmoid cross-entropy in nats/bits per sequence, wrong bits."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LN2 = math.log(2.0)


def loss_nats_per_seq(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sigmoid cross-entropy summed over output bits and masked steps, divided by the number of examples."""
    per_bit = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")  # [B, T, out]
    return (per_bit.sum(-1) * mask).sum() / logits.shape[0]


def wrong_bits_per_step(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Wrong output bits at each step [B, T] (sigmoid thresholded at 0.5, i.e. logit > 0), scored or not."""
    return ((logits > 0).float() != targets).float().sum(-1)


def per_example(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-example sums [B]: loss in nats, wrong bits (sigmoid thresholded at 0.5, i.e. logit > 0)."""
    with torch.no_grad():
        per_bit = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none")
        loss = (per_bit.sum(-1) * mask).sum(-1)  # [B]
        wrong = (wrong_bits_per_step(logits, targets) * mask).sum(-1)  # [B]
    return {"loss_nats": loss, "wrong_bits": wrong}


class MetricTotals:
    """Accumulates per-example sums over several batches; `means()` gives the per-sequence metrics."""

    def __init__(self) -> None:
        self.examples = 0
        self.loss_nats = 0.0
        self.wrong_bits = 0.0
        self.exact = 0
        self.extra: dict[str, float] = {}

    def add(self, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
            extra: dict[str, float] | None = None) -> None:
        sums = per_example(logits, targets, mask)
        self.examples += logits.shape[0]
        self.loss_nats += float(sums["loss_nats"].double().sum())
        self.wrong_bits += float(sums["wrong_bits"].double().sum())
        self.exact += int((sums["wrong_bits"] == 0).sum())
        for key, value in (extra or {}).items():
            self.extra[key] = self.extra.get(key, 0.0) + value

    def means(self) -> dict[str, float]:
        n = max(self.examples, 1)
        out = {
            "loss_bits_per_seq": self.loss_nats / n / LN2,
            "wrong_bits_per_seq": self.wrong_bits / n,
            "seq_accuracy": self.exact / n,
        }
        out.update({key: value / n for key, value in self.extra.items()})
        return out
