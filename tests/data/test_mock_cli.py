"""``aion-engine mock``: writes a dataset, refuses to clobber one, rejects bad sizes with exit 2."""

from __future__ import annotations

import pytest

from engine.cli import main
from engine.data.mock import generate
from engine.data.store import open_dataset
from engine.errors import ValidationError


def test_cli_writes_dataset_and_refuses_existing(tmp_path, capsys):
    out = tmp_path / "mock20"
    assert main(["mock", "--n", "20", "--seed", "7", "--out", str(out), "--workers", "1", "--no-progress"]) == 0
    with open_dataset(out) as ds:
        assert len(ds) == 20
        before = ds.hash
    assert "wrote 20 objects" in capsys.readouterr().out

    assert main(["mock", "--n", "5", "--seed", "1", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and str(out) in err and "--overwrite" in err
    with open_dataset(out) as ds:  # untouched
        assert len(ds) == 20 and ds.hash == before

    assert main(["mock", "--n", "8", "--seed", "1", "--out", str(out), "--overwrite", "--workers", "1",
                 "--no-progress"]) == 0
    with open_dataset(out) as ds:
        assert len(ds) == 8
    assert not list(tmp_path.glob(".mock20.*")), "no temporary folders left behind"


@pytest.mark.parametrize("bad", ["0", "-3", "ten"])
def test_cli_bad_n_exits_2_naming_the_option(tmp_path, capsys, bad):
    with pytest.raises(SystemExit) as exc:
        main(["mock", "--n", bad, "--out", str(tmp_path / "x")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--n" in err and repr(bad) in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(("kwargs", "word"), [({"n": 0}, "n"), ({"n": 3, "seed": -1}, "seed"),
                                              ({"n": 3, "workers": 0}, "workers")])
def test_api_rejects_bad_arguments(tmp_path, kwargs, word):
    args = {"seed": 0, **kwargs}
    n = args.pop("n")
    seed = args.pop("seed")
    with pytest.raises(ValidationError, match=word):
        generate(tmp_path / "x", n, seed, progress=False, **args)
    assert not (tmp_path / "x").exists()


def test_preview_writes_pngs(tiny_mock, tmp_path):
    import shutil

    from engine.data.mock.preview import write_preview

    copy = tmp_path / "copy"
    shutil.copytree(tiny_mock, copy)
    paths = write_preview(copy)
    names = {p.name for p in paths}
    assert {"mock_cutouts.png", "mock_spectra.png"} <= names
    for p in paths:
        assert p.stat().st_size > 10_000 and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
