"""Failpoints: parsed strictly, and reaching an armed one kills the process (in a child)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from processor import failpoints


def test_parse_counts_and_refuses_unknown_names() -> None:
    assert failpoints.parse("") == {}
    assert failpoints.parse("stage1.rekeyed, stage2.final_written=3") == {
        "stage1.rekeyed": 1, "stage2.final_written": 3}
    with pytest.raises(ValueError, match="unknown failpoint"):
        failpoints.parse("stage1.typo=1")
    with pytest.raises(ValueError, match="positive integer"):
        failpoints.parse("stage1.rekeyed=0")


def test_an_armed_point_kills_the_process_at_its_nth_hit_only() -> None:
    code = ("from processor import failpoints\n"
            "for i in range(5):\n"
            "    print(i, flush=True)\n"
            "    failpoints.reach('stage1.keys_announced')\n")
    env = dict(os.environ, **{failpoints.ENV: "stage1.keys_announced=3"})
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == -signal.SIGKILL
    assert out.stdout.split() == ["0", "1", "2"]
    env.pop(failpoints.ENV)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.split() == ["0", "1", "2", "3", "4"]
