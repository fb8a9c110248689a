"""NAB evaluation harness: streams each series through fresh detectors, scores them, writes NAB's layout."""

from __future__ import annotations

import csv
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.table import Table

from processor.evaluate.nab.corpus import NabCorpus, NabSeries
from processor.evaluate.nab.errors import NabDataError
from processor.evaluate.nab.scorer import PROFILES, GroupScore, Profile, ProfileResult, score_corpus

FloatArray = npt.NDArray[np.float64]


class StreamingDetector(Protocol):
    """The duck-typed detector contract: score a value before learning it, higher = more anomalous."""

    def score_one(self, x: float) -> float: ...

    def learn_one(self, x: float) -> object: ...


DetectorFactory = Callable[[], StreamingDetector]

# NAB's own tooling splits result file names at the first underscore to recover the detector.
_NAME = re.compile(r"^[A-Za-z0-9.\-]+$")


def check_detector_name(name: str) -> str:
    if not _NAME.match(name):
        raise NabDataError(f"detector name {name!r}: use letters, digits, '.' or '-' only "
                           "(NAB reads the detector name up to the first '_' of a result file)")
    return name


def run_detector(series: NabSeries, factory: DetectorFactory) -> FloatArray:
    """Streams one series row by row through a fresh detector: score_one(x), then learn_one(x)."""
    detector = factory()
    score, learn = detector.score_one, detector.learn_one
    out = np.empty(series.values.size)
    for i, x in enumerate(series.values.tolist()):
        out[i] = score(x)
        learn(x)
    if not np.all(np.isfinite(out)):
        row = int(np.argmin(np.isfinite(out)))
        raise NabDataError(f"{series.name}: detector returned {out[row]} at row {row}; scores must be finite")
    return out


@dataclass(frozen=True)
class DetectorRun:
    """One detector over the corpus: per-series scores and the per-profile NAB results."""

    name: str
    scores: tuple[FloatArray, ...]
    results: Mapping[str, ProfileResult]
    detect_seconds: float


@dataclass(frozen=True)
class NabEvaluation:
    corpus: NabCorpus
    runs: tuple[DetectorRun, ...]

    def normalized(self, detector: str, profile: str = "standard") -> float | None:
        run = next(r for r in self.runs if r.name == detector)
        return run.results[profile].overall.normalized


def score_detector(corpus: NabCorpus, name: str, scores: Sequence[npt.ArrayLike],
                   profiles: Sequence[Profile] = PROFILES, detect_seconds: float = 0.0) -> DetectorRun:
    """Scores precomputed per-series scores (e.g. an oracle, or another tool's output)."""
    arrays = tuple(np.asarray(s, dtype=np.float64) for s in scores)
    return DetectorRun(name=check_detector_name(name), scores=arrays,
                       results=score_corpus(corpus.labels, arrays, profiles),
                       detect_seconds=detect_seconds)


def evaluate(corpus: NabCorpus, detectors: Mapping[str, DetectorFactory],
             out_dir: Path | None = None, profiles: Sequence[Profile] = PROFILES) -> NabEvaluation:
    """Runs every detector over every series, scores each the NAB way, optionally writes results."""
    runs = []
    for name, factory in detectors.items():
        check_detector_name(name)
        t0 = time.perf_counter()
        scores = [run_detector(s, factory) for s in corpus.series]
        run = score_detector(corpus, name, scores, profiles, time.perf_counter() - t0)
        if out_dir is not None:
            write_results(out_dir, name, corpus, run.scores)
        runs.append(run)
    return NabEvaluation(corpus=corpus, runs=tuple(runs))


def result_path(out_dir: Path, detector_name: str, series: NabSeries) -> Path:
    """NAB's layout: DIR/<detector>/<category>/<detector>_<file>.csv."""
    return Path(out_dir) / detector_name / series.category / f"{detector_name}_{series.file_name}"


def _num(x: float) -> str:
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else repr(x)


def write_results(out_dir: Path, detector_name: str, corpus: NabCorpus,
                  scores: Sequence[npt.ArrayLike]) -> list[Path]:
    """Writes one CSV per series with columns timestamp,value,anomaly_score,label."""
    check_detector_name(detector_name)
    if len(scores) != len(corpus.series):
        raise NabDataError(f"{len(scores)} score arrays for {len(corpus.series)} series")
    paths = []
    for series, raw in zip(corpus.series, scores, strict=True):
        s = np.asarray(raw, dtype=np.float64)
        if s.shape != series.values.shape:
            raise NabDataError(f"{series.name}: {s.size} scores for {series.values.size} rows")
        path = result_path(out_dir, detector_name, series)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["timestamp", "value", "anomaly_score", "label"])
            w.writerows(zip(series.timestamps, map(_num, series.values.tolist()),
                            map(repr, s.tolist()), series.label_column().tolist(), strict=True))
        paths.append(path)
    return paths


def _cell(g: GroupScore) -> str:
    if g.normalized is not None:
        return f"{g.normalized:.1f}"
    # No windows: nothing to normalise against, so show the raw FP cost (0 is best).
    return f"raw {g.raw.score:+.2f}"


def render_tables(evaluation: NabEvaluation) -> list[Table]:
    """One table per profile: rows are categories then overall, one column per detector."""
    runs = evaluation.runs
    if not runs:
        return []
    tables = []
    for profile in runs[0].results:
        first = runs[0].results[profile]
        t = Table(title=f"NAB score ({profile}; null = 0, perfect = 100)", title_justify="left")
        width = max(len(c) for c in [*first.categories, "threshold"])
        t.add_column("category", min_width=width, no_wrap=True)
        t.add_column("files", justify="right")
        t.add_column("windows", justify="right")
        for run in runs:
            t.add_column(run.name, justify="right", overflow="fold")
        if len(runs) > 1:
            t.add_column("margin", justify="right")
            t.caption = f"margin = {runs[-1].name} - {runs[0].name}"
        groups = [(c, [r.results[profile].categories[c] for r in runs]) for c in first.categories]
        groups.append(("overall", [r.results[profile].overall for r in runs]))
        for label, gs in groups:
            cells = [_cell(g) for g in gs]
            if len(runs) > 1:
                a, b = gs[0], gs[-1]
                diff = (b.normalized - a.normalized if a.normalized is not None and b.normalized is not None
                        else b.raw.score - a.raw.score)
                cells.append(f"{diff:+.1f}" if a.normalized is not None else f"raw {diff:+.2f}")
            t.add_row(label, str(gs[0].n_series), str(gs[0].n_windows), *cells,
                      style="bold" if label == "overall" else None, end_section=label == groups[-2][0])
        t.add_row("threshold", "", "", *[f"{r.results[profile].threshold:.6g}" for r in runs],
                  *([""] if len(runs) > 1 else []))
        tables.append(t)
    return tables


def print_tables(evaluation: NabEvaluation, console: Console | None = None) -> None:
    console = console or Console()
    corpus = evaluation.corpus
    console.print(f"NAB corpus {corpus.data_dir}: {len(corpus.series)} series, "
                  f"{sum(len(s.labels.windows) for s in corpus.series)} windows "
                  f"(windows file {corpus.windows_path})")
    if corpus.unlabelled:
        console.print(f"skipped {len(corpus.unlabelled)} data files with no windows entry")
    if corpus.missing:
        console.print(f"skipped {len(corpus.missing)} windows entries with no data file")
    for t in render_tables(evaluation):
        console.print(t)
    for run in evaluation.runs:
        console.print(f"{run.name}: detection took {run.detect_seconds:.1f}s")
