"""NAB corpus loading: files whose clock steps back are labelled as NAB's labeller does and
scored in file order; `evaluate nab` without --detector scores the shipped detectors."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from processor.evaluate.nab.baselines import perfect_scores
from processor.evaluate.nab.cli import main
from processor.evaluate.nab.corpus import load_corpus
from processor.evaluate.nab.scorer import STANDARD, label_series, score_at

T0 = datetime(2026, 1, 1)
WINDOW = ("2026-01-01 01:40:00.000000", "2026-01-01 03:20:00.000000")  # minutes 100..200


def _stamp(minute: int) -> str:
    return (T0 + timedelta(minutes=minute)).strftime("%Y-%m-%d %H:%M:%S")


def _write(root: Path, minutes: list[int], name: str = "cat/steps.csv") -> Path:
    path = root / "data" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    body = "".join(f"{_stamp(m)},{v:.3f}\n" for m, v in zip(minutes, rng.normal(10, 1, len(minutes)),
                                                            strict=True))
    path.write_text("timestamp,value\n" + body)
    return path


def _windows(root: Path, names: list[str]) -> Path:
    path = root / "windows.json"
    path.write_text(json.dumps({n: [list(WINDOW)] for n in names}))
    return path


def _labeller(minutes: list[int]) -> list[int]:
    """NAB's labeller: a row is labelled when its timestamp is within the window."""
    return [int(100 <= m <= 200) for m in minutes]


def test_a_file_whose_clock_steps_back_inside_and_outside_a_window(tmp_path: Path) -> None:
    minutes = list(range(0, 150))  # into the window
    minutes += list(range(120, 240))  # steps back 30 minutes inside it, then leaves it
    minutes += list(range(60, 90))  # steps back to before the window: outside it
    minutes += list(range(240, 400))
    _write(tmp_path, minutes)
    corpus = load_corpus(tmp_path / "data", _windows(tmp_path, ["cat/steps.csv"]))
    [series] = corpus.series
    assert series.label_column().tolist() == _labeller(minutes)
    lab = series.labels
    members = np.nonzero(lab.window_id == 0)[0]
    assert lab.windows == ((int(members[0]), int(members[-1])),)
    # Scored in file order: the window's first row earns the full reward, its later rows less,
    # rows outside it cost, the stepped-back rows after the window included.
    assert lab.unit_value[members[0]] == pytest.approx(1.0)
    assert np.all(np.diff(lab.unit_value[members]) < 0)
    outside = np.nonzero(lab.window_id < 0)[0]
    assert np.all(lab.unit_value[outside] < 0)
    stepped_back = [i for i, m in enumerate(minutes) if 60 <= m < 90 and i > members[-1]]
    assert stepped_back and np.all(lab.unit_value[stepped_back] < 0)
    perfect = score_at([lab], perfect_scores([lab]), STANDARD, 0.5)
    assert perfect.tp == 1 and perfect.fp == 0


def test_sorted_files_keep_nab_sweeper_geometry(tmp_path: Path) -> None:
    minutes = list(range(0, 400))
    _write(tmp_path, minutes)
    corpus = load_corpus(tmp_path / "data", _windows(tmp_path, ["cat/steps.csv"]))
    lab = corpus.series[0].labels
    ranged = label_series(lab.name, lab.n_rows, [(100, 200)])
    assert lab.windows == ranged.windows == ((100, 200),)
    assert lab.unit_value.tolist() == ranged.unit_value.tolist()


def test_evaluate_nab_without_detectors_scores_the_shipped_ones(tmp_path: Path) -> None:
    names = ["cat/a.csv", "cat/b.csv"]
    for name in names:
        _write(tmp_path, list(range(0, 400)), name)
    out = io.StringIO()
    code = main(["--data", str(tmp_path / "data"), "--windows", str(_windows(tmp_path, names))],
                console=Console(file=out, width=200))
    text = out.getvalue()
    assert code == 0, text
    assert "windowedGaussian" in text and "candidate" in text
    assert "margin = candidate - windowedGaussian" in text
