"""The CLI shell: verbs are discovered, engine errors become one line and exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from engine import cli


def test_help_lists_design_verbs():
    out = subprocess.run([sys.executable, "-m", "engine.cli", "--help"], capture_output=True, text=True, check=True)
    for verb in cli._verb_modules():
        assert verb in out.stdout


def test_unknown_verb_exits_nonzero():
    with pytest.raises(SystemExit) as exc:
        cli.main(["no-such-verb"])
    assert exc.value.code == 2
