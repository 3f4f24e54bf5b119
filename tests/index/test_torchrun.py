"""`torchrun` with two gloo ranks: each embeds its shard, rank 0 merges after the barrier."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.cli import main


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None, reason="no torchrun")
def test_torchrun_two_ranks_equals_single_process(index_dataset, tmp_path, monkeypatch):
    from engine import paths

    env = {**os.environ, "AION_INDEX_ROOT": str(tmp_path / "dist"), "OMP_NUM_THREADS": "1"}
    torchrun = str(Path(sys.executable).parent / "torchrun")
    cmd = [torchrun, "--standalone", "--nproc-per-node", "2", "-m", "engine.cli", "embed", "--dataset",
           str(index_dataset), "--model", "pixel-pca", "--view", "photometry", "--device", "cpu", "--batch-size", "8",
           "--chunk-batches", "1", "--quiet", "--json"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert '"chunks_total": 4' in done.stdout  # rank 0 reports its shard: 26 of 52 rows in chunks of 8
    vdir = tmp_path / "dist" / "index-test" / "pixel-pca" / "photometry"
    assert not (vdir / ".embed-job").exists()
    monkeypatch.setattr(paths, "INDEX_ROOT", tmp_path / "single")
    assert main(["embed", "--dataset", str(index_dataset), "--model", "pixel-pca", "--view", "photometry",
                 "--quiet"]) == 0
    single = tmp_path / "single" / "index-test" / "pixel-pca" / "photometry"
    # float16 rows: the two runs multiply batches of different sizes, so BLAS may round one value a float16
    # step (~1e-3 relative) differently; anything beyond that is a sharding bug (rows lost, doubled or swapped)
    np.testing.assert_allclose(np.load(vdir / "embeddings.npy").astype(np.float32),
                               np.load(single / "embeddings.npy").astype(np.float32), rtol=2e-3, atol=1e-3)
    np.testing.assert_array_equal(np.load(vdir / "valid.npy"), np.load(single / "valid.npy"))
