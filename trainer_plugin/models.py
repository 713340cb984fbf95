"""Small models for the shipped example tasks."""

from __future__ import annotations

import torch
from torch import nn

from gputuned.trainer_plugin.config import ModelConfig


class DigitsCNN(nn.Module):
    """Two 3x3 convolutions and a linear head for 8x8 digit images given as 64 features."""

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(hidden * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.view(-1, 1, 8, 8)).flatten(1))


def build_model(cfg: ModelConfig) -> nn.Module:
    """The model a config names: ``mlp`` (64-h-h-10) or ``cnn``."""
    if cfg.kind == "cnn":
        return DigitsCNN(cfg.hidden)
    return nn.Sequential(nn.Linear(64, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, cfg.hidden), nn.ReLU(),
                         nn.Linear(cfg.hidden, 10))
