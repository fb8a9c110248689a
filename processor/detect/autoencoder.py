"""Autoencoder: numpy MLP over an entity's window vector, calibrated, explainable, storable."""

from __future__ import annotations

import io
import json
import math
import zipfile
from typing import Any, NamedTuple

import numpy as np

from processor.detect import stats
from processor.detect.base import Parametrised
from processor.detect.exceptions import ModelFormatError
from processor.detect.mlp import MLP

FORMAT_VERSION = 2  # 2: generalised Pareto tail, per-feature min_std
# Calibration keeps the error quantiles up to TAIL_LEVEL and a generalised Pareto tail beyond
# it (peaks over threshold, as in SPOT): a fixed-size summary, not the training errors. The
# shape is fitted because squared reconstruction errors of real windows are heavy-tailed (one
# feature's spike dominates the sum): an exponential tail called ordinary spikes 5-sigma
# events there, while Gaussian-like errors keep a shape near 0 (the exponential).
MAX_SHAPE = 0.5  # the moment estimate holds below 1/2; heavier tails are capped there
TAIL_LEVEL = 0.9
LEVELS = np.linspace(0.0, TAIL_LEVEL, 91)
MIN_CALIBRATION_ROWS = 10


class FeatureDeviation(NamedTuple):
    """One feature of a vector: what was seen, what the model rebuilt, and its error share."""

    column: int  # position in the vector
    observed: float
    expected: float
    deviation: float  # (observed - expected) / training std of the feature
    share: float  # this feature's part of the squared reconstruction error, in [0, 1]


class Autoencoder(Parametrised):
    """Batch-trained MLP autoencoder; reconstruction error -> score via its error distribution.

    ``fit(X)`` standardises each feature with the training mean and std (std floored by
    ``min_std``, one value or one per feature, and ``min_relative_std * |mean|``), trains a ``d -> hidden -> ... -> d``
    network (tanh, mirrored decoder) with Adam from ``seed``, and calibrates on a held-out
    ``validation_fraction`` of the rows (errors on rows the network trained on are too
    optimistic): the error's tail probability P(E >= e) becomes a Gaussian-equivalent z
    and the score ``squash(z)`` as for every other detector — normal vectors score 0,
    a score of 0.5 means an error as rare as a 4.4-sigma event.

    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> t = rng.normal(size=(400, 1))
    >>> X = np.hstack([t, 2 * t, -t]) + rng.normal(0, 0.05, (400, 3))  # one latent factor
    >>> model = Autoencoder(hidden=(4, 1), epochs=200, seed=0).fit(X)
    >>> model.score_one(np.array([1.0, 2.0, -1.0])), model.score_one(np.array([1.0, -2.0, -1.0])) > 0.5
    (0.0, True)
    >>> int(np.argmax(model.contributions(np.array([1.0, -2.0, -1.0]))))
    1
    """

    def __init__(
        self,
        hidden: tuple[int, ...] = (16, 4),
        epochs: int = 100,
        batch_size: int = 32,
        learning_rate: float = 3e-3,
        weight_decay: float = 1e-5,
        validation_fraction: float = 0.2,
        min_std: float | tuple[float, ...] = 1e-6,
        min_relative_std: float = 0.01,
        z0: float = stats.Z0,
        tau: float = stats.TAU,
        seed: int = 0,
    ) -> None:
        if not hidden or min(hidden) < 1:
            raise ValueError(f"hidden must be one or more positive layer widths, got {hidden}")
        self.hidden = tuple(hidden)
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.min_std = min_std
        self.min_relative_std = min_relative_std
        self.z0 = z0
        self.tau = tau
        self.seed = seed
        self._net: MLP | None = None
        self._mean = np.empty(0)
        self._std = np.empty(0)
        self._quantiles = np.empty(0)
        self._tail = (math.nan, math.nan, 0.0)  # (threshold u, scale sigma, shape xi)

    @property
    def is_fitted(self) -> bool:
        return self._net is not None

    @property
    def n_features(self) -> int:
        return int(self._mean.size)

    def fit(self, X: Any) -> Autoencoder:
        """Train on the rows of X (rows with a non-finite value are dropped); returns self."""
        data = np.asarray(X, dtype=np.float64)
        if data.ndim != 2:
            raise ValueError(f"fit takes a 2-D array (rows = vectors), got shape {data.shape}")
        data = data[np.isfinite(data).all(axis=1)]
        if len(data) < 2:
            raise ValueError(f"need at least 2 finite rows to fit, got {len(data)}")
        rng = np.random.default_rng(self.seed)
        self._mean = data.mean(axis=0)
        std = data.std(axis=0)
        floor = np.asarray(self.min_std, dtype=np.float64)
        if floor.ndim and floor.size != data.shape[1]:
            raise ValueError(f"min_std has {floor.size} values for {data.shape[1]} features")
        self._std = np.maximum(np.maximum(std, floor), self.min_relative_std * np.abs(self._mean))
        z = (data - self._mean) / self._std
        order = rng.permutation(len(z))
        n_val = int(len(z) * self.validation_fraction)
        if n_val < MIN_CALIBRATION_ROWS or len(z) - n_val < 2:
            n_val = 0
        val, train = z[order[:n_val]], z[order[n_val:]]
        sizes = (z.shape[1], *self.hidden, *reversed(self.hidden[:-1]), z.shape[1])
        self._net = MLP(sizes, rng)
        self._net.fit(train, train, self.epochs, self.batch_size, self.learning_rate, self.weight_decay, rng)
        self._calibrate(self._errors_z(val if n_val else train))
        return self

    def _calibrate(self, errors: np.ndarray) -> None:
        q = np.quantile(errors, LEVELS)
        u = float(q[-1])
        excess = errors[errors > u] - u
        m = float(excess.mean()) if excess.size else 0.0
        v = float(excess.var()) if excess.size > 1 else 0.0
        # Method of moments for the generalised Pareto: xi = (1 - m^2/v) / 2, sigma = m (1 - xi).
        xi = min(max(0.5 * (1.0 - m * m / v), 0.0), MAX_SHAPE) if v > 0 else 0.0
        sigma = m * (1.0 - xi)
        # A degenerate calibration set (all errors equal) must not make every error infinite.
        sigma = max(sigma, 1e-3 * (u - float(q[0])), 1e-6 * u, 1e-12)
        self._quantiles = q
        self._tail = (u, sigma, xi)

    def _log_tail_above(self, e: Any) -> Any:
        """log P(E >= e) for e above the threshold u (generalised Pareto beyond P(E >= u))."""
        u, sigma, xi = self._tail
        y = np.maximum(np.asarray(e, dtype=np.float64) - u, 0.0) / sigma
        tail = -np.log1p(xi * y) / xi if xi > 1e-9 else -y
        return math.log(1.0 - TAIL_LEVEL) + tail

    def _net_or_raise(self) -> MLP:
        if self._net is None:
            raise ValueError("Autoencoder is not fitted: call fit(X) first")
        return self._net

    def _standardise(self, X: np.ndarray) -> np.ndarray:
        self._net_or_raise()
        if X.shape[-1] != self._mean.size:
            raise ValueError(f"expected {self._mean.size} features, got {X.shape[-1]}")
        return (X - self._mean) / self._std

    def _errors_z(self, z: np.ndarray) -> np.ndarray:
        r = self._net_or_raise().forward(z) - z
        return np.mean(r * r, axis=-1)

    def errors(self, X: Any) -> np.ndarray:
        """Mean squared reconstruction error per row, in standardised units."""
        return self._errors_z(self._standardise(np.asarray(X, dtype=np.float64)))

    def log_tail(self, errors: np.ndarray) -> np.ndarray:
        """log P(E >= e) under the calibration errors (quantile body, Pareto tail)."""
        u = self._tail[0]
        e = np.asarray(errors, dtype=np.float64)
        body = np.maximum(1.0 - np.interp(e, self._quantiles, LEVELS), 1.0 - TAIL_LEVEL)
        with np.errstate(divide="ignore"):
            return np.where(e <= u, np.log(body), self._log_tail_above(e))

    def score(self, X: Any) -> np.ndarray:
        """Scores in [0, 1] of the rows of X."""
        lp = self.log_tail(self.errors(X))
        return stats.squash_many(stats.z_from_log_tail_many(lp), self.z0, self.tau)

    def score_one(self, x: Any) -> float:
        """Score of one vector; the scalar twin of :meth:`score` (a few microseconds)."""
        z = self._standardise(np.asarray(x, dtype=np.float64))
        r = self._net_or_raise().forward(z) - z
        e = float(r @ r) / r.size
        if e > self._tail[0]:
            log_p = float(self._log_tail_above(e))
        else:
            body = 1.0 - float(np.interp(e, self._quantiles, LEVELS))
            log_p = math.log(max(body, 1.0 - TAIL_LEVEL))
        return stats.squash(stats.z_from_log_tail(log_p), self.z0, self.tau)

    def reconstruct(self, X: Any) -> np.ndarray:
        """The network's rebuild of X, in the original units (the 'expected' values)."""
        z = self._standardise(np.asarray(X, dtype=np.float64))
        return self._net_or_raise().forward(z) * self._std + self._mean

    def contributions(self, x: Any) -> np.ndarray:
        """Each feature's share of the squared reconstruction error of x (sums to 1, or all 0)."""
        z = self._standardise(np.asarray(x, dtype=np.float64))
        r = self._net_or_raise().forward(z) - z
        sq = r * r
        total = sq.sum(axis=-1, keepdims=True)
        return np.divide(sq, total, out=np.zeros_like(sq), where=total > 0)

    def explain_features(self, x: Any) -> list[FeatureDeviation]:
        """Per-feature observed/expected/deviation/share of one vector, largest share first."""
        xv = np.asarray(x, dtype=np.float64)
        expected = self.reconstruct(xv)
        shares = self.contributions(xv)
        dev = (xv - expected) / self._std
        order = np.argsort(-shares, kind="stable")
        return [FeatureDeviation(int(j), float(xv[j]), float(expected[j]), float(dev[j]), float(shares[j]))
                for j in order]

    def to_bytes(self) -> bytes:
        """The fitted model as versioned npz bytes (no pickle), for storage."""
        net = self._net_or_raise()
        params = {k: list(v) if isinstance(v, tuple) else v for k, v in self._get_params().items()}
        arrays: dict[str, Any] = {
            "format_version": np.array(FORMAT_VERSION),
            "params": np.array(json.dumps(params)),
            "mean": self._mean,
            "std": self._std,
            "quantiles": self._quantiles,
            "tail": np.array(self._tail),
            "n_layers": np.array(len(net.weights)),
            **net.to_arrays(),
        }
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Autoencoder:
        """Load bytes written by :meth:`to_bytes`; ModelFormatError if unreadable or newer."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise ModelFormatError(f"not an autoencoder model ({exc}); retrain it") from exc
        version = int(arrays.get("format_version", -1))
        if version != FORMAT_VERSION:
            raise ModelFormatError(
                f"autoencoder model format {version}, this build reads {FORMAT_VERSION}; retrain it"
            )
        params = json.loads(str(arrays["params"]))
        params["hidden"] = tuple(params["hidden"])
        if isinstance(params.get("min_std"), list):
            params["min_std"] = tuple(params["min_std"])
        model = cls(**params)
        model._net = MLP.from_arrays(arrays, int(arrays["n_layers"]))
        model._mean, model._std = arrays["mean"], arrays["std"]
        model._quantiles = arrays["quantiles"]
        u, sigma, xi = arrays["tail"].tolist()
        model._tail = (float(u), float(sigma), float(xi))
        return model
