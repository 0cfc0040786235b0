"""The command line: the built-in example runs end to end; user errors are one line, exit code 2."""
from __future__ import annotations

import subprocess
import sys

from cuptycho import cli


def test_demo_recovers_the_object(capsys):
    assert cli.main(["demo", "--preset", "small_nearfield", "--epochs", "20", "--known-probe"]) == 0
    out = capsys.readouterr().out
    last = [line for line in out.splitlines() if line.strip().startswith("19 ")][0]
    assert float(last.split()[2]) > 0.99             # correlation with the true object


def test_unknown_preset_is_a_one_line_error():
    run = subprocess.run([sys.executable, "-m", "cuptycho", "demo", "--preset", "nope"],
                         capture_output=True, text=True)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr and "nope" in run.stderr
