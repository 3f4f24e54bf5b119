"""Embedding store: row alignment, valid mask, resumption after a crash, sharded merge."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from engine.data.store import open_dataset
from engine.errors import ModelError
from engine.index.embeddings import JOB_DIR, EmbeddingStore, embed_dataset, shard_range


def test_rows_aligned_and_invalid_rows_zeroed(index_dataset, counting_encoder, tmp_path):
    ds = open_dataset(index_dataset)
    enc = counting_encoder()
    res = embed_dataset(ds, enc, "image", tmp_path / "v", batch_size=8, chunk_batches=2, progress=False)
    store = EmbeddingStore.open(tmp_path / "v")
    assert store.vectors.dtype == np.float16 and store.vectors.shape == (len(ds), 8)
    assert np.isfinite(store.vectors).all()
    np.testing.assert_array_equal(store.valid, ds.catalog["has_image_ls"].to_numpy())
    assert not np.abs(store.vectors[~store.valid]).any()
    # row i is object i of the catalog
    ref, ok = counting_encoder()(ds, ds.ids[:3])
    np.testing.assert_allclose(store.vectors[:3].astype(np.float32), ref, rtol=1e-3, atol=1e-3)
    assert res.meta["n_valid"] == int(store.valid.sum()) and res.meta["dataset_hash"] == ds.hash
    assert not (tmp_path / "v" / JOB_DIR).exists()


def test_crash_then_resume_recomputes_only_unfinished_chunks(index_dataset, counting_encoder, tmp_path):
    ds = open_dataset(index_dataset)  # 52 objects, batch 4, chunk = 2 batches -> 7 chunks, 13 calls
    crashing = counting_encoder(fail_after=5)
    with pytest.raises(RuntimeError, match="simulated crash"):
        embed_dataset(ds, crashing, "image", tmp_path / "v", batch_size=4, chunk_batches=2, progress=False)
    assert (tmp_path / "v" / JOB_DIR).is_dir() and not (tmp_path / "v" / "embeddings.npy").exists()
    resumed = counting_encoder()
    res = embed_dataset(ds, resumed, "image", tmp_path / "v", batch_size=4, chunk_batches=2, progress=False)
    # 5 calls finished chunks 0 and 1 (4 calls); the 5th call's chunk was lost and is redone
    assert res.total_chunks == 7 and res.encoded_chunks == 5
    assert resumed.calls == 13 - 4
    fresh = embed_dataset(ds, counting_encoder(), "image", tmp_path / "w", batch_size=4, chunk_batches=2, progress=False)
    assert fresh.encoded_chunks == 7
    np.testing.assert_array_equal(np.load(tmp_path / "v" / "embeddings.npy"), np.load(tmp_path / "w" / "embeddings.npy"))


def test_changed_encoder_discards_partial_work(index_dataset, counting_encoder, tmp_path):
    ds = open_dataset(index_dataset)
    with pytest.raises(RuntimeError):
        embed_dataset(ds, counting_encoder(fail_after=4), "image", tmp_path / "v", batch_size=4, progress=False)
    other = counting_encoder()
    other.model_hash = "counting-v2"
    res = embed_dataset(ds, other, "image", tmp_path / "v", batch_size=4, chunk_batches=2, progress=False)
    assert res.encoded_chunks == res.total_chunks


def test_killed_process_resumes(index_dataset, tmp_path):
    """A real SIGKILL mid-run: the re-run computes only what the killed run had not committed."""
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(os.path.dirname(__file__))!r})
        from conftest import CountingEncoder
        from engine.data.store import open_dataset
        from engine.index.embeddings import embed_dataset

        class Slow(CountingEncoder):
            def __call__(self, ds, ids):
                out = super().__call__(ds, ids)
                print("call", self.calls, flush=True)
                if self.calls >= 6 and sys.argv[1] == "slow":
                    time.sleep(60)
                return out

        enc = Slow()
        res = embed_dataset(open_dataset({str(index_dataset)!r}), enc, "image", {str(tmp_path / "v")!r},
                            batch_size=4, chunk_batches=2, progress=False)
        print("done", enc.calls, res.encoded_chunks, flush=True)
    """))
    proc = subprocess.Popen([sys.executable, str(script), "slow"], stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("call 6"):
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    out = subprocess.run([sys.executable, str(script), "fast"], capture_output=True, text=True, check=True).stdout
    done = [line for line in out.splitlines() if line.startswith("done")][0].split()
    # chunk c = calls 2c+1, 2c+2; the kill came inside call 6, before chunk 2 was committed, so
    # chunks 0 and 1 are kept and 13 - 4 calls (5 chunks) remain
    assert (int(done[1]), int(done[2])) == (9, 5)
    emb = np.load(tmp_path / "v" / "embeddings.npy")
    assert emb.shape == (52, 8) and np.isfinite(emb).all()


def test_nonfinite_valid_vector_is_an_error(index_dataset, counting_encoder, tmp_path):
    class Broken(counting_encoder):
        def __call__(self, ds, ids):
            out, ok = super().__call__(ds, ids)
            out[ok] = np.nan
            return out, ok

    with pytest.raises(ModelError, match="non-finite vectors for object_id"):
        embed_dataset(open_dataset(index_dataset), Broken(), "image", tmp_path / "v", progress=False)


@pytest.mark.parametrize("n,world", [(52, 2), (52, 3), (5, 4), (3, 4)])
def test_shard_ranges_partition_rows(n, world):
    ranges = [shard_range(n, r, world) for r in range(world)]
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    sizes = [b - a for a, b in ranges]
    assert max(sizes) - min(sizes) <= 1


def test_sharded_ranks_merge_into_single_process_result(index_dataset, counting_encoder, tmp_path):
    """world_size 3 simulated in one process: ranks 1, 2 embed their shards, rank 0 then merges."""
    ds = open_dataset(index_dataset)
    calls = []
    for rank in (1, 2, 0):
        enc = counting_encoder()
        res = embed_dataset(ds, enc, "image", tmp_path / "v", batch_size=4, rank=rank, world_size=3, progress=False)
        calls.append(enc.calls)
        assert (res.meta is None) == (rank != 0)
    assert sum(calls) == sum(-(-(b - a) // 4) for a, b in (shard_range(52, r, 3) for r in range(3)))
    single = embed_dataset(ds, counting_encoder(), "image", tmp_path / "w", batch_size=4, progress=False)
    np.testing.assert_array_equal(np.load(tmp_path / "v" / "embeddings.npy"), np.load(tmp_path / "w" / "embeddings.npy"))
    assert json.loads((tmp_path / "v" / "embeddings.json").read_text())["n_valid"] == single.meta["n_valid"]


def test_merge_refuses_missing_shard(index_dataset, counting_encoder, tmp_path):
    from engine.errors import IndexError_

    ds = open_dataset(index_dataset)
    with pytest.raises(IndexError_, match="rank 1"):
        embed_dataset(ds, counting_encoder(), "image", tmp_path / "v", batch_size=4, rank=0, world_size=2, progress=False)
