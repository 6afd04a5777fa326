"""QFA's accuracy predictor: an MLP from one-hot subnet features to top-1 (percent).

apple/ml-batchquant trains an MLP (three ReLU hidden layers of 600 units, Adam lr 3e-3,
100 epochs, ``nsgaii_search.py``) on ~8k subnets scored after recalibration; here the
layer width, depth, epochs and sample counts come from the preset (``[methods.qfa]``).
Targets are standardised for training; predictions come back in top-1 percent. Full-batch
Adam on the mean squared error, seeded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import kendalltau
from torch import nn


@dataclass
class AccuracyPredictor:
    """An MLP with ``depth`` hidden layers of ``width`` units (ReLU) on the features."""

    num_features: int
    width: int = 128
    depth: int = 2
    epochs: int = 300
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0

    def __post_init__(self) -> None:
        layers: list[nn.Module] = []
        width_in = self.num_features
        with torch.random.fork_rng(devices=[]):  # seeded init, the global RNG untouched
            torch.manual_seed(self.seed)
            for _ in range(self.depth):
                layers += [nn.Linear(width_in, self.width), nn.ReLU()]
                width_in = self.width
            layers.append(nn.Linear(width_in, 1))
        self.net = nn.Sequential(*layers)
        self.mean, self.std = 0.0, 1.0

    def fit(self, features: np.ndarray, top1: np.ndarray) -> float:
        """Train on ``features`` (N × F) and ``top1`` (N, percent); the final train RMSE
        (percent points)."""
        x = torch.as_tensor(features, dtype=torch.float32)
        y = torch.as_tensor(top1, dtype=torch.float32)
        self.mean, self.std = float(y.mean()), float(y.std()) if len(y) > 1 else 1.0
        self.std = self.std if self.std > 1e-6 else 1.0
        target = (y - self.mean) / self.std
        opt = torch.optim.Adam(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        self.net.train()
        with torch.enable_grad():
            for _ in range(self.epochs):
                opt.zero_grad(set_to_none=True)
                loss = nn.functional.mse_loss(self.net(x).squeeze(1), target)
                loss.backward()
                opt.step()
        return rmse(self.predict(features), top1)

    @torch.no_grad()
    def predict(self, features: np.ndarray) -> np.ndarray:
        """Predicted top-1 (percent) per row of ``features``."""
        self.net.eval()
        x = torch.as_tensor(np.asarray(features), dtype=torch.float32)
        return (self.net(x).squeeze(1) * self.std + self.mean).numpy().astype(float)

    def state(self) -> dict:
        """What :meth:`load` needs (for checkpoints)."""
        return {"net": self.net.state_dict(), "mean": self.mean, "std": self.std}

    def load(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.mean, self.std = float(state["mean"]), float(state["std"])


def rmse(pred: np.ndarray, true: np.ndarray) -> float:
    """Root mean squared error (percent points)."""
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    return float(np.sqrt(np.mean((pred - true) ** 2))) if len(true) else float("nan")


def kendall_tau(pred: np.ndarray, true: np.ndarray) -> float:
    """Kendall's τ-b between predicted and measured top-1 (NaN for fewer than 2 or constant)."""
    if len(true) < 2 or np.ptp(true) == 0 or np.ptp(pred) == 0:
        return float("nan")
    return float(kendalltau(pred, true).statistic)
