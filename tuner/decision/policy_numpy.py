"""Pure-numpy inference of a policy exported from stable-baselines3 (no torch in the daemon)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: The policy shipped with the package (trained by ``gputuned tuner train`` on all three GPUs).
PACKAGED_POLICY = Path(str(files("gputuned.tuner") / "data" / "policy_zeus.npz"))

def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"tanh": np.tanh, "relu": _relu}


class NumpyPolicy:
    """A discrete-action MLP policy: hidden layers with one activation, then logits; argmax acts."""

    def __init__(self, weights: list[np.ndarray], biases: list[np.ndarray], activation: str = "tanh") -> None:
        if len(weights) != len(biases) or not weights:
            raise ValueError("a policy needs as many bias vectors as weight matrices, at least one")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}")
        for w, b in zip(weights, biases, strict=True):
            if w.ndim != 2 or b.shape != (w.shape[0],):
                raise ValueError(f"layer shapes do not match: weight {w.shape}, bias {b.shape}")
        self.weights = [np.ascontiguousarray(w, dtype=np.float64) for w in weights]
        self.biases = [np.asarray(b, dtype=np.float64) for b in biases]
        self.activation = activation
        self._act = _ACTIVATIONS[activation]

    @property
    def obs_dim(self) -> int:
        """Length of the observation vector."""
        return self.weights[0].shape[1]

    @property
    def n_actions(self) -> int:
        """Number of actions (logits)."""
        return self.weights[-1].shape[0]

    def logits(self, obs: np.ndarray) -> np.ndarray:
        """Action logits for one observation."""
        x = np.asarray(obs, dtype=np.float64).reshape(-1)
        if x.shape[0] != self.obs_dim:
            raise ValueError(f"observation has {x.shape[0]} values, the policy expects {self.obs_dim}")
        for w, b in zip(self.weights[:-1], self.biases[:-1], strict=True):
            x = self._act(w @ x + b)
        return self.weights[-1] @ x + self.biases[-1]

    def __call__(self, obs: np.ndarray) -> int:
        """The deterministic action: the largest logit."""
        return int(np.argmax(self.logits(obs)))

    def save(self, path: Path) -> None:
        """Write the weights to an .npz file."""
        arrays: dict[str, Any] = {f"w{i}": w for i, w in enumerate(self.weights)}
        arrays |= {f"b{i}": b for i, b in enumerate(self.biases)}
        arrays["activation"] = np.array(self.activation)
        np.savez(Path(path), **arrays)

    @classmethod
    def load(cls, path: Path = PACKAGED_POLICY) -> NumpyPolicy:
        """Read weights written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such policy file")
        with np.load(path, allow_pickle=False) as data:
            n = sum(1 for k in data.files if k.startswith("w"))
            return cls([data[f"w{i}"] for i in range(n)], [data[f"b{i}"] for i in range(n)], str(data["activation"]))


def from_sb3(model: object) -> NumpyPolicy:
    """Export an SB3 PPO/A2C MlpPolicy with a discrete action space to numpy."""
    import torch.nn as nn  # only at export time, never in the daemon

    policy = model.policy  # type: ignore[attr-defined]
    layers = [m for m in policy.mlp_extractor.policy_net if isinstance(m, nn.Linear)]
    acts = {type(m).__name__ for m in policy.mlp_extractor.policy_net if not isinstance(m, nn.Linear)}
    activation = "relu" if acts == {"ReLU"} else "tanh"
    layers.append(policy.action_net)
    weights = [m.weight.detach().cpu().numpy() for m in layers]
    biases = [m.bias.detach().cpu().numpy() for m in layers]
    return NumpyPolicy(weights, biases, activation)
