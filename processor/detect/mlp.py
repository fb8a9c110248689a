"""Small dense MLP in plain numpy: tanh hidden layers, linear output, Adam on squared error."""

from __future__ import annotations

import math

import numpy as np


class MLP:
    """Fully connected network with layer ``sizes`` (input, hidden..., output).

    Weights start Glorot-normal from the given generator, so training is reproducible from a
    seed. Small enough (tens of units) that a forward pass of one vector costs microseconds
    and training on a few thousand rows well under a second.
    """

    def __init__(self, sizes: tuple[int, ...], rng: np.random.Generator) -> None:
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"MLP sizes must be >= 2 positive layer widths, got {sizes}")
        self.sizes = tuple(sizes)
        self.weights = [
            rng.normal(0.0, math.sqrt(2.0 / (a + b)), size=(a, b))
            for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        ]
        self.biases = [np.zeros(b) for b in sizes[1:]]

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Output for a batch (n, input) or one vector (input,)."""
        a = x
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            a = a @ w + b
            if i < last:
                a = np.tanh(a)
        return a

    def _activations(self, x: np.ndarray) -> list[np.ndarray]:
        acts = [x]
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            z = acts[-1] @ w + b
            acts.append(np.tanh(z) if i < last else z)
        return acts

    def _gradients(self, x: np.ndarray, y: np.ndarray) -> tuple[float, list[np.ndarray], list[np.ndarray]]:
        """Mean squared error of the batch and its gradients (backpropagation)."""
        acts = self._activations(x)
        diff = acts[-1] - y
        loss = float(np.mean(diff * diff))
        delta = 2.0 * diff / diff.size
        gw: list[np.ndarray] = [np.empty(0)] * len(self.weights)
        gb: list[np.ndarray] = [np.empty(0)] * len(self.weights)
        for i in range(len(self.weights) - 1, -1, -1):
            gw[i] = acts[i].T @ delta
            gb[i] = delta.sum(axis=0)
            if i > 0:
                delta = (delta @ self.weights[i].T) * (1.0 - acts[i] * acts[i])  # tanh'
        return loss, gw, gb

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        epochs: int,
        batch_size: int,
        learning_rate: float,
        weight_decay: float,
        rng: np.random.Generator,
    ) -> list[float]:
        """Adam on mean squared error over shuffled mini-batches; returns the loss per epoch."""
        params = self.weights + self.biases
        m = [np.zeros_like(p) for p in params]
        v = [np.zeros_like(p) for p in params]
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        t = 0
        history = []
        n = len(x)
        for _ in range(epochs):
            order = rng.permutation(n)
            total = 0.0
            for start in range(0, n, batch_size):
                idx = order[start:start + batch_size]
                loss, gw, gb = self._gradients(x[idx], y[idx])
                total += loss * len(idx)
                t += 1
                lr_t = learning_rate * math.sqrt(1.0 - beta2**t) / (1.0 - beta1**t)
                for k, (p, g) in enumerate(zip(params, gw + gb, strict=True)):
                    if weight_decay and k < len(self.weights):
                        g = g + weight_decay * p  # L2 on weights only
                    m[k] *= beta1
                    m[k] += (1.0 - beta1) * g
                    v[k] *= beta2
                    v[k] += (1.0 - beta2) * g * g
                    p -= lr_t * m[k] / (np.sqrt(v[k]) + eps)
            history.append(total / n)
        return history

    def to_arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            out[f"w{i}"] = w
            out[f"b{i}"] = b
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], n_layers: int) -> MLP:
        net = cls.__new__(cls)
        net.weights = [np.asarray(arrays[f"w{i}"], dtype=np.float64) for i in range(n_layers)]
        net.biases = [np.asarray(arrays[f"b{i}"], dtype=np.float64) for i in range(n_layers)]
        net.sizes = (net.weights[0].shape[0], *(w.shape[1] for w in net.weights))
        return net
