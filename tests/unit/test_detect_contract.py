"""The detector contract, checked on every detector in processor/detect/ and processor/evaluate/,
discovered automatically.

A detector opts out of a check only through its class attribute ``_contract_skips``
({check name: reason}); an empty reason fails.
"""

from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil
from typing import Any

import numpy as np
import pytest

import processor.detect as detect_pkg
import processor.evaluate as evaluate_pkg
from processor.detect.base import BaseDetector

N = 240
PACKAGES = (detect_pkg, evaluate_pkg)


Cls = type[BaseDetector[Any]]


def _all_subclasses(cls: Cls) -> list[Cls]:
    out: list[Cls] = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


def _discover() -> list[Cls]:
    # Every top-level module, so a new detector module is covered without editing this file.
    for pkg in PACKAGES:
        for mod in pkgutil.iter_modules(pkg.__path__):
            if not mod.ispkg:
                importlib.import_module(f"{pkg.__name__}.{mod.name}")
    prefixes = tuple(pkg.__name__ + "." for pkg in PACKAGES)
    found = {
        c for c in _all_subclasses(BaseDetector)  # type: ignore[type-abstract]
        if not inspect.isabstract(c) and c.__module__.startswith(prefixes)
    }
    return sorted(found, key=lambda c: c.__name__)


DETECTORS = _discover()


def test_discovery_finds_the_known_detectors() -> None:
    names = {c.__name__ for c in DETECTORS}
    assert {"RobustBaseline", "EWMA", "Seasonal", "WindowedGaussian", "NabDetector",
            "Thresholded"} <= names


def _make(cls: Cls) -> BaseDetector[Any]:
    return cls(**cls._unit_test_params())


def _series(det: BaseDetector[Any], seed: int = 7) -> np.ndarray:
    """A level, a step, a spike and a drift: enough to exercise every state path."""
    rng = np.random.default_rng(seed)
    level = np.r_[np.full(N // 2, 100.0), np.full(N - N // 2, 130.0)]
    level[N // 3] += 80.0
    level += np.linspace(0.0, 10.0, N)
    return level + rng.normal(0.0, 3.0, N)


def _with_nans(det: BaseDetector[Any], xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """xs with NaN rows inserted after every 9th value; returns (series, mask of inserted)."""
    out, mask = [], []
    for i, x in enumerate(xs):
        out.append(x)
        mask.append(False)
        if i % 9 == 8:
            out.append(np.nan)
            mask.append(True)
    return np.array(out), np.array(mask)


def _skip_if_opted_out(cls: Cls, check: str) -> None:
    reason = cls._contract_skips.get(check)
    if reason is not None:
        assert reason.strip(), f"{cls.__name__} opts out of {check} without a reason"
        pytest.skip(f"{cls.__name__}: {reason}")


def _close(a: np.ndarray, b: np.ndarray) -> None:
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


params = pytest.mark.parametrize("cls", DETECTORS, ids=lambda c: c.__name__)


@params
def test_deterministic_and_in_range(cls: Cls) -> None:
    _skip_if_opted_out(cls, "deterministic")
    a, b = _make(cls), _make(cls)
    xs = _series(a)
    sa, sb = a.process_many(xs), b.process_many(xs)
    np.testing.assert_array_equal(sa, sb)
    assert sa.shape == (N,) and np.isfinite(sa).all()
    assert ((sa >= 0.0) & (sa <= 1.0)).all()
    assert sa.max() > 0.0, "the series has a step and a spike; a detector that never scores is broken"


@params
def test_process_many_equals_score_then_learn_loop(cls: Cls) -> None:
    _skip_if_opted_out(cls, "process_many")
    det = _make(cls)
    xs = _series(det)
    many = _make(cls).process_many(xs)
    one = np.array([det.process_one(x) for x in xs])
    loop_det = _make(cls)
    loop = []
    for x in xs:
        loop.append(loop_det.score_one(x))
        loop_det.learn_one(x)
    _close(many, one)
    _close(many, np.array(loop))


@params
def test_process_many_in_chunks_equals_one_call(cls: Cls) -> None:
    _skip_if_opted_out(cls, "process_many")
    whole, chunked = _make(cls), _make(cls)
    xs = _series(whole)
    parts = [chunked.process_many(xs[i:i + 37]) for i in range(0, N, 37)]
    _close(whole.process_many(xs), np.concatenate(parts))


@params
def test_score_many_scores_without_learning(cls: Cls) -> None:
    _skip_if_opted_out(cls, "score_many")
    det, twin = _make(cls), _make(cls)
    xs = _series(det)
    det.process_many(xs[: N // 2])
    twin.process_many(xs[: N // 2])
    many = det.score_many(xs[N // 2:])
    _close(many, np.array([det.score_one(x) for x in xs[N // 2:]]))
    # Nothing was learned: the rest scores as for the twin that never called score_many.
    _close(det.process_many(xs[N // 2:]), twin.process_many(xs[N // 2:]))


@params
def test_state_pickles(cls: Cls) -> None:
    _skip_if_opted_out(cls, "pickle")
    det = _make(cls)
    xs = _series(det)
    det.process_many(xs[: N // 2])
    copy = pickle.loads(pickle.dumps(det))
    np.testing.assert_array_equal(copy.process_many(xs[N // 2:]), det.process_many(xs[N // 2:]))


@params
def test_does_not_mutate_input(cls: Cls) -> None:
    _skip_if_opted_out(cls, "no_mutation")
    det = _make(cls)
    xs = _series(det)
    keep = xs.copy()
    det.process_many(xs)
    det.score_many(xs)
    for x in xs[:20]:
        det.score_one(x)
        det.learn_one(x)
    np.testing.assert_array_equal(xs, keep)


@params
def test_empty_input(cls: Cls) -> None:
    _skip_if_opted_out(cls, "empty")
    det = _make(cls)
    empty = np.empty(0)
    assert det.process_many(empty).shape == (0,)
    assert det.score_many(empty).shape == (0,)
    assert det.n_learned == 0


@params
def test_nan_scores_zero(cls: Cls) -> None:
    _skip_if_opted_out(cls, "nan_scores_zero")
    det = _make(cls)
    xs, mask = _with_nans(det, _series(det))
    scores = det.process_many(xs)
    assert (scores[mask] == 0.0).all()
    assert np.isfinite(scores).all()


@params
def test_nan_leaves_state(cls: Cls) -> None:
    _skip_if_opted_out(cls, "nan_leaves_state")
    det = _make(cls)
    clean = _series(det)
    xs, mask = _with_nans(det, clean)
    _close(det.process_many(xs)[~mask], _make(cls).process_many(clean))


@params
def test_clone_is_fresh_with_same_params(cls: Cls) -> None:
    _skip_if_opted_out(cls, "clone")
    det = _make(cls)
    xs = _series(det)
    det.process_many(xs)
    fresh = det.clone()
    assert type(fresh) is cls and fresh is not det
    assert repr(fresh) == repr(det) == repr(_make(cls))
    assert fresh.n_learned == 0
    np.testing.assert_array_equal(fresh.process_many(xs), _make(cls).process_many(xs))


@params
def test_params_stored_verbatim(cls: Cls) -> None:
    det = _make(cls)
    sig = inspect.signature(cls)
    for name, p in sig.parameters.items():
        assert hasattr(det, name), f"{cls.__name__} does not store {name!r}"
        if name in cls._unit_test_params():
            assert getattr(det, name) == cls._unit_test_params()[name] or name in (
                "detector",), name
        elif p.default is not inspect.Parameter.empty:
            assert getattr(det, name) == p.default, name
