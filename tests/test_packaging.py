"""The wheel carries conf/ and tasks/ and works outside the repository."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_runs_from_another_directory(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(dist),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = dist.glob("aimod-*.whl")

    # The environment reuses this interpreter's dependencies; only aimod itself
    # comes from the wheel.
    environment = tmp_path / "venv"
    venv.create(environment, system_site_packages=True, with_pip=True)
    python = environment / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    located = subprocess.run(
        [str(python), "-c", "import ai_module.paths as p; print(p.builtin_conf_dir())"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        check=True,
    )
    assert str(environment) in located.stdout
    assert "_bundled" in located.stdout

    aimod = environment / "bin" / "aimod"
    done = subprocess.run(
        [str(aimod), "task=nl2cypher", "provider=mock", "limit=5"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    (run_dir,) = (elsewhere / "runs" / "nl2cypher").iterdir()
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    assert len(lines) == 5
    assert json.loads(lines[0])["input"]["question"]
