"""Docstring examples in processor/detect/ and processor/evaluate/ run and hold."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import processor.detect as detect_pkg
import processor.evaluate as evaluate_pkg

MODULES = sorted(f"{pkg.__name__}.{m.name}" for pkg in (detect_pkg, evaluate_pkg)
                 for m in pkgutil.iter_modules(pkg.__path__) if not m.ispkg)


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_detector_modules_have_examples() -> None:
    with_examples = set()
    for name in MODULES:
        module = importlib.import_module(name)
        if doctest.DocTestFinder().find(module) and any(t.examples for t in doctest.DocTestFinder().find(module)):
            with_examples.add(name.rsplit(".", 1)[-1])
    assert {"robust", "ewma", "seasonal", "gaussian", "autoencoder", "threshold", "window"} <= with_examples
