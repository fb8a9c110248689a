"""Score calibration shared by all detectors: deviation -> score squash, robust location/scale.

Every detector turns its evidence into a Gaussian-equivalent deviation ``z`` (how many
standard deviations from normal) and then into a score with the same :func:`squash`, so
scores from different detectors mean the same thing and an ensemble can compare them.

    score = 0                              for z <= z0
    score = 1 - exp(-(z - z0) / tau)       for z >  z0

With the defaults (z0=3, tau=2) a 3-sigma deviation scores 0, 4.4 sigma scores 0.5,
6.2 sigma 0.8 and 7.6 sigma 0.9. The exponential (rather than a Gaussian tail probability)
keeps scores spread out for the heavy-tailed deviations real latency series produce, so a
threshold still separates "big" from "huge".
"""

from __future__ import annotations

import math

import numpy as np

Z0 = 3.0
TAU = 2.0
# Consistency constants: sigma = 1.4826 * MAD = 1.2533 * mean absolute deviation for a Gaussian.
MAD_TO_SIGMA = 1.482602218505602
MEAN_AD_TO_SIGMA = 1.2533141373155001
# Last-resort scale so x == expected gives z = 0 and anything else a finite z.
TINY_SCALE = 1e-12

DIRECTIONS = ("up", "down", "both")


def squash(z: float, z0: float = Z0, tau: float = TAU) -> float:
    """Score in [0, 1) for a deviation z (NaN and z <= z0 score 0).

    >>> squash(3.0), round(squash(3.0 + 2.0 * math.log(2.0)), 6), squash(float("nan"))
    (0.0, 0.5, 0.0)
    """
    if not z > z0:
        return 0.0
    return -math.expm1(-(z - z0) / tau)


def squash_many(z: np.ndarray, z0: float = Z0, tau: float = TAU) -> np.ndarray:
    """Vectorised :func:`squash`; NaN deviations score 0."""
    excess = np.asarray(z, dtype=np.float64) - z0
    excess = np.where(excess > 0.0, excess, 0.0)  # NaN compares False -> 0
    return -np.expm1(-excess / tau)


def t_to_z(t: float, dof: float) -> float:
    """Gaussian-equivalent of a Student-t deviation with ``dof`` degrees of freedom (Wallace 1959).

    A deviation measured against a baseline estimated from n values is t-distributed, not
    Gaussian: with 20 values a "4.4 sigma" deviation is as common as a 3.9 sigma Gaussian one.
    Converting keeps the warm-up from alarming on noise; the correction fades as n grows.

    >>> round(t_to_z(4.4, 20), 2), round(t_to_z(4.4, 1e9), 2), round(t_to_z(-4.4, 20), 2)
    (3.63, 4.4, -3.63)
    """
    nu = max(dof, 1.0)
    z = math.sqrt(nu * math.log1p(t * t / nu)) * (8.0 * nu + 1.0) / (8.0 * nu + 3.0)
    return z if t >= 0.0 else -z


def t_to_z_many(t: np.ndarray, dof: float) -> np.ndarray:
    nu = max(dof, 1.0)
    z = np.sqrt(nu * np.log1p(t * t / nu)) * ((8.0 * nu + 1.0) / (8.0 * nu + 3.0))
    return np.where(t >= 0.0, z, -z)


def squash_t(t: float, dof: float, direction: str, z0: float = Z0, tau: float = TAU) -> float:
    """``squash(directed(t_to_z(t, dof), direction), z0, tau)``, skipping the conversion when t cannot score.

    The Gaussian equivalent is never larger than t in magnitude and keeps its sign
    (|z| <= |t| * (8 nu + 1) / (8 nu + 3)), so with z0 >= 0 a t whose directed part is at most
    z0 scores 0 whatever the conversion gives; that is most values, and the conversion (a
    log and a square root) is the costly part. The margin (2 / (8 nu + 3), about 2e-10 at
    the dof cap) is far above rounding, so the result is bit-for-bit the full computation's.

    >>> squash_t(2.9, 20, "up"), squash_t(-9.0, 20, "up"), round(squash_t(9.0, 20, "up"), 6)
    (0.0, 0.0, 0.730341)
    """
    d = t if direction == "up" else -t if direction == "down" else abs(t)
    if d <= z0 and z0 >= 0.0 and dof < 1e9:
        return 0.0
    return squash(directed(t_to_z(t, dof), direction), z0, tau)


def directed(z: float, direction: str) -> float:
    """The part of a signed deviation that counts as anomalous for ``direction``."""
    if direction == "up":
        return z
    if direction == "down":
        return -z
    return abs(z)


def directed_many(z: np.ndarray, direction: str) -> np.ndarray:
    if direction == "up":
        return z
    if direction == "down":
        return -z
    return np.abs(z)


def check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")


def floor_scale(scale: float, level: float, min_scale: float, min_relative_scale: float) -> float:
    """Scale never below an absolute floor or a fraction of the level (a flat series has MAD 0).

    Without the relative floor a series that sat at exactly 120 ms for an hour would turn
    120.5 ms into an infinite deviation.
    """
    return max(scale, min_scale, min_relative_scale * abs(level), TINY_SCALE)


def median_mad_sorted(s: np.ndarray) -> tuple[float, float]:
    """Median and sigma-consistent robust scale of an ascending-sorted 1-D array.

    The scale is 1.4826 * MAD, falling back to 1.2533 * mean absolute deviation when more
    than half the values are equal (MAD 0), as in the modified z-score.
    """
    n = s.size
    med = (float(s[(n - 1) // 2]) + float(s[n // 2])) * 0.5
    dev = np.sort(np.abs(s - med))
    mad = (float(dev[(n - 1) // 2]) + float(dev[n // 2])) * 0.5
    if mad > 0.0:
        return med, MAD_TO_SIGMA * mad
    return med, MEAN_AD_TO_SIGMA * float(np.mean(dev))


def mad_scale_small(s: list[float], med: float) -> float:
    """The robust scale of a short ascending list ``s`` with median ``med`` (0 below 3 values),
    in plain Python: the seasonal references are a handful of values."""
    n = len(s)
    if n < 3:
        return 0.0
    dev = sorted([abs(v - med) for v in s])
    mad = (dev[(n - 1) // 2] + dev[n // 2]) * 0.5
    if mad > 0.0:
        return MAD_TO_SIGMA * mad
    return MEAN_AD_TO_SIGMA * sum(dev) / n


def median_mad_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`median_mad_sorted` for every row of a 2-D array (rows need not be sorted)."""
    s = np.sort(rows, axis=1)
    n = s.shape[1]
    med = (s[:, (n - 1) // 2] + s[:, n // 2]) * 0.5
    dev = np.sort(np.abs(s - med[:, None]), axis=1)
    mad = (dev[:, (n - 1) // 2] + dev[:, n // 2]) * 0.5
    fallback = MEAN_AD_TO_SIGMA * np.mean(dev, axis=1)
    return med, np.where(mad > 0.0, MAD_TO_SIGMA * mad, fallback)


# Abramowitz & Stegun 26.2.23 rational approximation of the inverse normal tail
# (absolute error < 4.5e-4), enough for turning a tail probability into a deviation.
_C = (2.515517, 0.802853, 0.010328)
_D = (1.432788, 0.189269, 0.001308)


def z_from_log_tail(log_p: float) -> float:
    """Gaussian-equivalent deviation z with P(Z > z) = exp(log_p); 0 for p >= 0.5.

    Takes the log so tails far beyond float range (p = 1e-400) still give a finite z.

    >>> round(z_from_log_tail(math.log(0.5)), 3), round(z_from_log_tail(math.log(0.00135)), 2)
    (0.0, 3.0)
    """
    if not log_p < math.log(0.5):
        return 0.0
    t = math.sqrt(-2.0 * log_p)
    z = t - (_C[0] + _C[1] * t + _C[2] * t * t) / (1.0 + _D[0] * t + _D[1] * t * t + _D[2] * t**3)
    return max(z, 0.0)


def z_from_log_tail_many(log_p: np.ndarray) -> np.ndarray:
    lp = np.minimum(np.asarray(log_p, dtype=np.float64), math.log(0.5))
    t = np.sqrt(-2.0 * lp)
    z = t - (_C[0] + _C[1] * t + _C[2] * t * t) / (1.0 + _D[0] * t + _D[1] * t * t + _D[2] * t**3)
    return np.maximum(z, 0.0)
