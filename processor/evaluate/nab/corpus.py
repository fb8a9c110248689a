"""Loads a NAB-layout corpus: data/<category>/<file>.csv (timestamp,value) plus a windows JSON file."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from processor.evaluate.nab.errors import NabDataError
from processor.evaluate.nab.scorer import PROBATION_PERCENT, SeriesLabels, label_rows


@dataclass(frozen=True, eq=False)
class NabSeries:
    """One labelled series: its rows as read and its scoring geometry."""

    name: str  # "<category>/<file>.csv", the key used in NAB's windows file
    timestamps: tuple[str, ...]  # verbatim, so result files carry the same timestamps
    values: npt.NDArray[np.float64]
    labels: SeriesLabels

    @property
    def category(self) -> str:
        return self.labels.category

    @property
    def file_name(self) -> str:
        return self.name.rsplit("/", 1)[-1]

    def label_column(self) -> npt.NDArray[np.int64]:
        """1 on rows inside a labelled window, else 0 (NAB's `label` column)."""
        return (self.labels.window_id >= 0).astype(np.int64)


@dataclass(frozen=True, eq=False)
class NabCorpus:
    """The series present both in the data directory and in the windows file, sorted by name."""

    data_dir: Path
    windows_path: Path
    series: tuple[NabSeries, ...]
    unlabelled: tuple[str, ...]  # data files with no windows entry: skipped, as NAB's runner does
    missing: tuple[str, ...]  # windows entries with no data file: skipped

    @property
    def labels(self) -> list[SeriesLabels]:
        return [s.labels for s in self.series]


def read_series_csv(path: Path) -> tuple[tuple[str, ...], npt.NDArray[np.float64]]:
    """Reads the `timestamp` and `value` columns of one NAB data file."""
    try:
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
    except OSError as exc:
        raise NabDataError(f"{path}: cannot read ({exc})") from exc
    if not rows or "timestamp" not in rows[0] or "value" not in rows[0]:
        raise NabDataError(f"{path}: needs a header with 'timestamp' and 'value' columns")
    t_col, v_col = rows[0].index("timestamp"), rows[0].index("value")
    body = [r for r in rows[1:] if r]
    try:
        values = np.array([float(r[v_col]) for r in body], dtype=np.float64)
    except (ValueError, IndexError) as exc:
        raise NabDataError(f"{path}: every row needs a numeric value ({exc})") from exc
    return tuple(r[t_col] for r in body), values


def _parse_times(texts: Sequence[str], where: str) -> npt.NDArray[np.datetime64]:
    try:
        return np.array([t.strip() for t in texts], dtype="datetime64[us]")
    except ValueError as exc:
        raise NabDataError(f"{where}: timestamps must look like 'YYYY-MM-DD HH:MM:SS' ({exc})") from exc


def window_members(times: npt.NDArray[np.datetime64], windows: Sequence[Sequence[str]],
                   where: str) -> list[npt.NDArray[np.int64]]:
    """The rows of each [start, end] timestamp window, in file order, as NAB's labeller finds them.

    A row belongs to a window when its timestamp is within [start, end], wherever it sits in the
    file: a file whose clock steps back (a clock change, a collector restart) is scored in file
    order, as NAB's labeller does. Of several rows stamped exactly `end` (repeated stamps at DST
    changes) only the first belongs, since NAB's sweeper ends a window at the first such row.
    """
    out = []
    for w in windows:
        if len(w) != 2:
            raise NabDataError(f"{where}: a window must be [start, end], got {w!r}")
        start, end = _parse_times([str(w[0]), str(w[1])], where)
        inside = (times >= start) & (times <= end)
        at_end = np.nonzero(times == end)[0]
        if at_end.size > 1:
            inside[at_end[1:]] = False
        rows = np.nonzero(inside)[0]
        if not rows.size:
            raise NabDataError(f"{where}: window {list(w)} contains no rows")
        out.append(rows.astype(np.int64))
    return out


def load_windows(path: Path) -> dict[str, list[list[str]]]:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise NabDataError(f"{path}: cannot read the windows file ({exc})") from exc
    if not isinstance(raw, dict):
        raise NabDataError(f"{path}: expected an object mapping '<category>/<file>.csv' to windows")
    return {str(k): list(v) for k, v in raw.items()}


def load_corpus(data_dir: Path, windows_path: Path,
                probation_percent: float = PROBATION_PERCENT) -> NabCorpus:
    """Reads every data file that has an entry in the windows file."""
    data_dir, windows_path = Path(data_dir), Path(windows_path)
    if not data_dir.is_dir():
        raise NabDataError(f"{data_dir}: not a directory (expected NAB's data/ layout)")
    windows = load_windows(windows_path)
    files = {p.relative_to(data_dir).as_posix(): p for p in sorted(data_dir.glob("*/*.csv"))}
    series = []
    for name in sorted(set(files) & set(windows)):
        stamps, values = read_series_csv(files[name])
        times = _parse_times(stamps, str(files[name]))
        rows = window_members(times, windows[name], f"{windows_path} [{name}]")
        labels = label_rows(name, len(stamps), rows, probation_percent)
        series.append(NabSeries(name=name, timestamps=stamps, values=values, labels=labels))
    if not series:
        raise NabDataError(f"no file under {data_dir}/<category>/ has an entry in {windows_path}")
    return NabCorpus(data_dir=data_dir, windows_path=windows_path, series=tuple(series),
                     unlabelled=tuple(sorted(set(files) - set(windows))),
                     missing=tuple(sorted(set(windows) - set(files))))
