"""The streamed, sharded top-k against a NumPy reference, on 8 (simulated) devices and on 1."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from gemini_embed.eval import search
from gemini_embed.eval.search import top_k
from gemini_embed.sharding import make_mesh


def reference(q, c, k, normalize):
    """float64 scores; order by score descending, then index ascending."""
    q, c = np.asarray(q, np.float64), np.asarray(c, np.float64)
    if normalize:
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        c = c / np.linalg.norm(c, axis=1, keepdims=True)
    sims = q @ c.T
    idx = np.arange(c.shape[0])
    order = np.stack([np.lexsort((idx, -row))[:k] for row in sims])
    return np.take_along_axis(sims, order, 1), order


MESHES = {"8dev": lambda: make_mesh(data=-1), "1dev": lambda: make_mesh(data=1, devices=jax.devices()[:1])}


@pytest.fixture(params=sorted(MESHES))
def mesh(request):
    m = MESHES[request.param]()
    assert m.devices.size == (8 if request.param == "8dev" else 1)
    return m


# (corpus rows, block rows, k, query batch): a corpus not divisible by 8 with k larger than a
# block; k beyond the corpus (capped); k = 1 with one block larger than the corpus; a block not
# divisible by 8 and a query batch not dividing the 37 queries
CASES = [(1003, 64, 100, 16), (50, 16, 80, 8), (203, 4096, 1, 256), (97, 7, 9, 5)]


@pytest.mark.parametrize("n,block,k,qb", CASES)
def test_exact_ties_match_reference(mesh, n, block, k, qb):
    # small integers: every dot product is exact in float32 and many scores tie
    rng = np.random.default_rng(n + k)
    q = rng.integers(-2, 3, size=(37, 4)).astype(np.float32)
    c = rng.integers(-2, 3, size=(n, 4)).astype(np.float32)
    scores, idx = top_k(q, c, k, corpus_block=block, query_batch=qb, mesh=mesh, normalize=False)
    ref_scores, ref_idx = reference(q, c, min(k, n), normalize=False)
    assert idx.dtype == np.int64 and idx.shape == (37, min(k, n))
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(scores, ref_scores.astype(np.float32))


@pytest.mark.parametrize("n,block,k,qb", CASES[:2])
def test_cosine_matches_reference(mesh, n, block, k, qb):
    rng = np.random.default_rng(1)
    q, c = rng.normal(size=(29, 16)) * 3, rng.normal(size=(n, 16))
    scores, idx = top_k(q, c, k, corpus_block=block, query_batch=qb, mesh=mesh)
    ref_scores, ref_idx = reference(q, c, min(k, n), normalize=True)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=1e-6)


def test_duplicate_rows_keep_lower_index_first(mesh):
    dup = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [2.0, 0.0]])
    _, idx = top_k(np.array([[1.0, 0.0]]), dup, 4, corpus_block=1, mesh=mesh)
    assert idx.tolist() == [[0, 2, 3, 1]]  # cosine: rows 0, 2, 3 all score 1


class RecordingCorpus:
    """Array-like corpus that records the rows of every slice read."""

    def __init__(self, arr):
        self.arr, self.shape, self.ndim, self.reads = arr, arr.shape, arr.ndim, []

    def __getitem__(self, item):
        out = self.arr[item]
        self.reads.append(out.shape[0])
        return out


def test_memmap_corpus_is_streamed_in_blocks(tmp_path):
    rng = np.random.default_rng(2)
    q, c = rng.normal(size=(10, 8)).astype(np.float32), rng.normal(size=(1000, 8)).astype(np.float32)
    np.save(tmp_path / "c.npy", c)
    mm = np.load(tmp_path / "c.npy", mmap_mode="r")
    rec = RecordingCorpus(mm)
    s1, i1 = top_k(q, rec, 20, corpus_block=128)
    s2, i2 = top_k(q, c, 20)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2, rtol=0, atol=1e-6)
    assert max(rec.reads) == 128 and sum(rec.reads) == 1000  # each row read once, one block at a time


def test_empty_and_invalid_inputs():
    q = np.ones((3, 4), np.float32)
    assert top_k(q, np.zeros((0, 4), np.float32), 5)[1].shape == (3, 0)
    assert top_k(np.zeros((0, 4), np.float32), q, 5)[1].shape == (0, 3)
    with pytest.raises(ValueError, match="k=0"):
        top_k(q, q, 0)
    with pytest.raises(ValueError, match=r"\(3, 5\)"):
        top_k(q, np.ones((3, 5)), 1)


DEEP_QUEUE = """
import json, os, sys
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core: the starved case
import numpy as np
from gemini_embed.eval import search
search.MAX_IN_FLIGHT = int(sys.argv[1])
for n, block, k, qb in 3 * CASES:
    rng = np.random.default_rng(n + k)
    q = rng.integers(-2, 3, size=(37, 4)).astype(np.float32)
    c = rng.integers(-2, 3, size=(n, 4)).astype(np.float32)
    scores, idx = search.top_k(q, c, k, corpus_block=block, query_batch=qb, normalize=False)
    print(json.dumps({"scores": np.asarray(scores).tolist(), "idx": np.asarray(idx).tolist()}))
"""


def test_many_merges_on_one_core_finish():
    # Regression: with every merge queued at once, one core and 8 devices, XLA's CPU thread pool
    # hung (3 runs in 3 without the bound, each aborted by the rendezvous timeout, as in CI).
    # A subprocess, so a hang fails this test instead of killing the pytest session.
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8 "
               "--xla_cpu_collective_call_terminate_timeout_seconds=30", JAX_PLATFORMS="cpu")
    script = f"CASES = {CASES}\n" + DEEP_QUEUE
    proc = subprocess.run([sys.executable, "-c", script, str(search.MAX_IN_FLIGHT)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(results) == 3 * len(CASES)
    for (n, _, k, _), got in zip(3 * CASES, results):  # the same inputs, scored here by NumPy
        rng = np.random.default_rng(n + k)
        q = rng.integers(-2, 3, size=(37, 4)).astype(np.float32)
        c = rng.integers(-2, 3, size=(n, 4)).astype(np.float32)
        ref_scores, _ = reference(q, c, min(k, n), normalize=False)
        np.testing.assert_array_equal(np.asarray(got["scores"]), ref_scores)  # small integers: exact
        picked = np.take_along_axis(q.astype(np.float64) @ c.T.astype(np.float64), np.asarray(got["idx"]), 1)
        np.testing.assert_array_equal(picked, ref_scores)  # ties may pick other rows of equal score
