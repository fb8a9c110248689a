"""Docstring examples in processor/detect/ run and hold."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import processor.detect as detect_pkg

MODULES = sorted(m.name for m in pkgutil.iter_modules(detect_pkg.__path__) if not m.ispkg)


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    module = importlib.import_module(f"{detect_pkg.__name__}.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_detector_modules_have_examples() -> None:
    with_examples = set()
    for name in MODULES:
        module = importlib.import_module(f"{detect_pkg.__name__}.{name}")
        if doctest.DocTestFinder().find(module) and any(t.examples for t in doctest.DocTestFinder().find(module)):
            with_examples.add(name)
    assert {"robust", "ewma", "seasonal", "gaussian", "autoencoder", "ensemble", "threshold"} <= with_examples
