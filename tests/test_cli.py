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


def test_abbreviated_options_are_refused_not_guessed(capsys):
    """`similar --k 3` once meant `--kind 3` (argparse prefix matching); now it is an error naming `--k`."""
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(["similar", "--dataset", "d", "--model", "m", "--view", "image",
                                       "--object-id", "1", "--k", "3"])
    assert exc.value.code == 2 and "--k" in capsys.readouterr().err
    args = cli.build_parser().parse_args(["similar", "--dataset", "d", "--model", "m", "--view", "image",
                                          "--object-id", "1", "-k", "3"])
    assert args.k == 3 and args.kind is None
