"""Gradient noise scale, statistical efficiency and learning-rate scaling rules.

The noise scale follows McCandlish et al. 2018 ("An Empirical Model of Large-Batch Training",
appendix A): from squared norms of a small-batch gradient (this rank's, batch b) and the
large-batch gradient (after the all-reduce, batch B) it forms unbiased estimates of |G|^2 and
tr(Sigma), smooths both with an exponential moving average and returns B_noise = tr(Sigma)/|G|^2.
Statistical efficiency and goodput follow Pollux (Qiao et al., OSDI 2021): E(B) = (B_noise + B0)
/ (B_noise + B). AdaScale's gain (Johnson et al. 2020) is (S + B0 |G|^2) / (S / s + B0 |G|^2).
"""

from __future__ import annotations

import math

LR_RULES = ("none", "linear", "sqrt", "adascale")


class NoiseScaleEstimator:
    """EMA-smoothed gradient noise scale from small/large batch squared gradient norms."""

    def __init__(self, beta: float = 0.95) -> None:
        self.beta = beta
        self.g2: float | None = None
        self.s: float | None = None

    def update(self, small_sq: float, small_batch: float, big_sq: float, big_batch: float) -> None:
        """Fold one step's squared norms in (ignored when not finite or batches equal)."""
        if big_batch <= small_batch or not (math.isfinite(small_sq) and math.isfinite(big_sq)):
            return
        g2 = (big_batch * big_sq - small_batch * small_sq) / (big_batch - small_batch)
        s = (small_sq - big_sq) / (1.0 / small_batch - 1.0 / big_batch)
        if self.g2 is None or self.s is None:
            self.g2, self.s = g2, s
        else:
            self.g2 = self.beta * self.g2 + (1 - self.beta) * g2
            self.s = self.beta * self.s + (1 - self.beta) * s

    @property
    def noise_scale(self) -> float | None:
        """B_noise = tr(Sigma) / |G|^2, or None before it is defined."""
        if self.g2 is None or self.s is None or self.g2 <= 0 or self.s <= 0:
            return None
        return self.s / self.g2

    def efficiency(self, batch: float, base_batch: float) -> float:
        """Statistical efficiency of ``batch`` relative to ``base_batch`` (1.0 when unknown)."""
        b_noise = self.noise_scale
        if b_noise is None:
            return 1.0
        return (b_noise + base_batch) / (b_noise + batch)

    def adascale_gain(self, batch: float, base_batch: float) -> float:
        """AdaScale gain r in [1, batch/base_batch] (linear scaling when the noise scale is unknown)."""
        scale = batch / base_batch
        if self.g2 is None or self.s is None or self.g2 <= 0 or self.s <= 0:
            return max(scale, 1.0) if scale >= 1 else scale
        gain = (self.s + base_batch * self.g2) / (self.s / scale + base_batch * self.g2)
        return min(max(gain, min(1.0, scale)), max(1.0, scale))


def scaled_lr(rule: str, base_lr: float, batch: float, base_batch: float,
              estimator: NoiseScaleEstimator | None = None) -> float:
    """Learning rate for ``batch`` under a scaling rule named in LR_RULES."""
    if rule == "none":
        return base_lr
    if rule == "linear":
        return base_lr * batch / base_batch
    if rule == "sqrt":
        return base_lr * math.sqrt(batch / base_batch)
    if rule == "adascale":
        return base_lr * (estimator or NoiseScaleEstimator()).adascale_gain(batch, base_batch)
    raise ValueError(f"lr_scaling: unknown rule {rule!r} (expected one of {', '.join(LR_RULES)})")
