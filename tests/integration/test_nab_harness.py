"""NAB harness over the shared NAB subset: streaming, scoring, NAB's result layout, and the CLI."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from processor.evaluate.nab.baselines import NullDetector, perfect_scores
from processor.evaluate.nab.cli import main
from processor.evaluate.nab.corpus import NabCorpus, load_corpus
from processor.evaluate.nab.harness import evaluate, result_path, score_detector

NAB = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "nab"
DATA, WINDOWS = NAB / "data", NAB / "combined_windows.json"

pytestmark = pytest.mark.skipif(not WINDOWS.exists(), reason=f"shared NAB subset not found at {NAB}")


class JumpDetector:
    """Trivial streaming detector: size of the step from the previous value against the typical step."""

    def __init__(self) -> None:
        self.prev: float | None = None
        self.mean_step = 0.0
        self.n = 0

    def score_one(self, x: float) -> float:
        if self.prev is None:
            return 0.0
        d = abs(x - self.prev)
        return d / (d + self.mean_step + 1e-9)

    def learn_one(self, x: float) -> None:
        if self.prev is not None:
            self.n += 1
            self.mean_step += (abs(x - self.prev) - self.mean_step) / self.n
        self.prev = x


@pytest.fixture(scope="module")
def corpus() -> NabCorpus:
    return load_corpus(DATA, WINDOWS)


def _window_rows_by_hand(name: str, stamps: list[str]) -> int:
    """Rows inside the file's windows, compared as strings: NAB's windows add '.000000'."""
    windows = json.loads(WINDOWS.read_text())[name]
    return sum(any(a[:19] <= t <= b[:19] for a, b in windows) for t in stamps)


def test_loads_every_labelled_file_of_the_subset(corpus: NabCorpus) -> None:
    expected = sorted(p.relative_to(DATA).as_posix() for p in DATA.glob("*/*.csv"))
    assert [s.name for s in corpus.series] == expected
    assert len(corpus.series) == len(json.loads(WINDOWS.read_text()))
    assert sum(len(s.labels.windows) for s in corpus.series) == sum(
        len(w) for w in json.loads(WINDOWS.read_text()).values())
    assert corpus.unlabelled == () and corpus.missing == ()


# From NAB's published results/windowedGaussian/windowedGaussian_standard_scores.csv:
# (file, rows, TP + FN = window rows after probation, TN + FP = other rows after probation).
NAB_COUNTS = [
    ("realTraffic/speed_7578.csv", 1127, 116, 842),
    ("realAWSCloudwatch/ec2_disk_write_bytes_1ef3de.csv", 4730, 473, 3548),  # repeated DST stamps
    ("realAWSCloudwatch/grok_asg_anomaly.csv", 4621, 465, 3463),
    ("realAWSCloudwatch/ec2_cpu_utilization_c6585a.csv", 4032, 0, 3428),
    ("realAWSCloudwatch/iio_us-east-1_i-a2eb1cd9_NetworkIn.csv", 1243, 126, 931),
]


@pytest.mark.parametrize(("name", "rows", "in_windows", "outside"), NAB_COUNTS)
def test_geometry_matches_nab_published_counts(corpus: NabCorpus, name: str, rows: int,
                                               in_windows: int, outside: int) -> None:
    lab = next(s.labels for s in corpus.series if s.name == name)
    assert lab.n_rows == rows
    assert int(((lab.window_id >= 0) & lab.scorable).sum()) == in_windows
    assert int(((lab.window_id < 0) & lab.scorable).sum()) == outside


def test_window_reward_matches_nab_published_file_score(corpus: NabCorpus) -> None:
    # NAB scored windowedGaussian 0.8606718242697022 on this one-window file with no FP: the
    # reward of its earliest detection, which our geometry reproduces at row 1638.
    lab = next(s.labels for s in corpus.series if s.name == "realAWSCloudwatch/ec2_network_in_257a54.csv")
    assert lab.windows == ((1437, 1839),)
    assert lab.unit_value[1638] == pytest.approx(0.8606718242697022, abs=1e-15)


def test_cli_scores_side_by_side_and_writes_nab_layout(tmp_path: Path, corpus: NabCorpus) -> None:
    out = io.StringIO()
    code = main(["--data", str(DATA), "--windows", str(WINDOWS), "--out", str(tmp_path),
                 "--detector", "null", "--detector", f"jump={__name__}:JumpDetector"],
                console=Console(file=out, width=200))
    text = out.getvalue()
    assert code == 0, text
    for profile in ("standard", "reward_low_FP_rate", "reward_low_FN_rate"):
        assert f"NAB score ({profile};" in text
    assert "margin = jump - null" in text  # the side-by-side margin column
    for category in ("artificialWithAnomaly", "realAWSCloudwatch", "realTraffic", "overall"):
        assert category in text

    for detector in ("null", "jump"):
        files = sorted(tmp_path.joinpath(detector).rglob("*.csv"))
        assert len(files) == len(corpus.series)
        for series in corpus.series:
            path = tmp_path / detector / series.category / f"{detector}_{series.file_name}"
            assert path == result_path(tmp_path, detector, series) and path.exists()
            with path.open(newline="") as f:
                rows = list(csv.reader(f))
            assert rows[0] == ["timestamp", "value", "anomaly_score", "label"]
            body = rows[1:]
            assert [r[0] for r in body] == list(series.timestamps)
            assert np.array_equal(np.array([float(r[1]) for r in body]), series.values)
            scores = np.array([float(r[2]) for r in body])
            assert np.all(np.isfinite(scores)) and np.all((scores >= 0) & (scores <= 1))
            if detector == "null":
                assert np.all(scores == 0.5)
            labels = [int(r[3]) for r in body]
            assert set(labels) <= {0, 1}
            assert sum(labels) == _window_rows_by_hand(series.name, list(series.timestamps))


def test_scores_are_finite_and_written_results_rescore_identically(tmp_path: Path,
                                                                   corpus: NabCorpus) -> None:
    ev = evaluate(corpus, {"null": NullDetector, "jump": JumpDetector}, out_dir=tmp_path)
    null, jump = ev.runs
    for profile, result in null.results.items():
        assert result.overall.normalized == pytest.approx(0.0, abs=1e-9), profile
    for result in jump.results.values():
        groups = [result.overall, *result.categories.values()]
        assert all(math.isfinite(g.raw.score) for g in groups)
        assert result.overall.normalized is not None and math.isfinite(result.overall.normalized)
        assert result.overall.normalized < 100.0
        # Categories are scored at the corpus threshold, so their raw scores add up.
        assert sum(g.raw.score for g in result.categories.values()) == pytest.approx(
            result.overall.raw.score)

    # Anyone reading the written files gets the same scores: rescore the anomaly_score column.
    reread = []
    for series in corpus.series:
        with result_path(tmp_path, "jump", series).open(newline="") as f:
            reread.append(np.array([float(r["anomaly_score"]) for r in csv.DictReader(f)]))
    again = score_detector(corpus, "jump", reread)
    for name, result in jump.results.items():
        assert again.results[name].overall.normalized == result.overall.normalized
        assert again.results[name].threshold == result.threshold

    oracle = score_detector(corpus, "perfect", perfect_scores(corpus.labels))
    assert oracle.results["standard"].overall.normalized == pytest.approx(100.0)


def test_cli_reports_a_bad_windows_file(tmp_path: Path) -> None:
    bad = tmp_path / "windows.json"
    bad.write_text("[]")
    out = io.StringIO()
    assert main(["--data", str(DATA), "--windows", str(bad)], console=Console(file=out, width=200)) == 2
    assert "expected an object" in out.getvalue()
