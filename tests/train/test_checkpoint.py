"""Checkpointer on a small train state sharded over the 8 CPU devices (tests/conftest.py)."""
import gc
import json
import logging
import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from gemini_embed.train.checkpoint import CheckpointRestoreError, Checkpointer, NonFiniteStateError
from gemini_embed.train.export import export_params, load_params

LOGGER = "gemini_embed.train.checkpoint"


@flax.struct.dataclass
class State:
    step: jax.Array
    params: dict
    opt_state: dict


@pytest.fixture(scope="module")
def mesh():
    assert jax.device_count() == 8
    return Mesh(np.array(jax.devices()), ("d",), axis_types=(jax.sharding.AxisType.Auto,))


def make_state(mesh, seed=0):
    row, rep = NamedSharding(mesh, P("d")), NamedSharding(mesh, P())
    k1, k2 = jax.random.split(jax.random.key(seed))
    w = jax.random.normal(k1, (16, 8), jnp.float32)
    params = {"w": jax.device_put(w, row),
              "emb": jax.device_put(jax.random.normal(k2, (4, 8), jnp.bfloat16), NamedSharding(mesh, P(None, "d"))),
              "b": jax.device_put(jnp.arange(8, dtype=jnp.float32) * 0.1, rep)}
    opt = {"mu": jax.device_put(w * 0.5, row), "count": jax.device_put(jnp.int32(seed), rep)}
    return State(step=jax.device_put(jnp.int32(seed), rep), params=params, opt_state=opt)


def abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def host(tree):
    return jax.tree.map(np.asarray, tree)


def assert_bit_identical(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


def save_steps(workdir, mesh, steps, **kw):
    with Checkpointer(workdir, save_every=1, keep=None, async_save=False, **kw) as ckpt:
        for s in steps:
            assert ckpt.save(s, make_state(mesh, s), {"pos": s}, {"note": f"step {s}"})


def data_files(step_dir):
    """The array data orbax reads back (state/d/*); state/ocdbt.process_*/ are merged leftovers."""
    files = sorted((step_dir / "state" / "d").iterdir())
    assert files
    return files


def test_round_trip_bit_identical_into_target_shardings(tmp_path, mesh):
    state = make_state(mesh, 3)
    data = {"epoch": 1, "index": [4, 5], "mix": {"weights": [0.25, 0.75]}, "seed": None}
    meta = {"run": "unit", "lr": 1e-3, "tags": ["a", "b"]}
    config = {"model": {"d_model": 16, "layers": 2}, "train": {"batch": 8}}
    with Checkpointer(tmp_path, save_every=10, config=config) as ckpt:
        assert ckpt.restore_latest(abstract(state)) is None
        assert ckpt.save(10, state, data, meta)
    with Checkpointer(tmp_path, save_every=10) as ckpt:  # a fresh process would do this
        step, restored, data2, meta2 = ckpt.restore_latest(abstract(state))
    assert step == 10 and isinstance(restored, State)
    assert_bit_identical(restored, state)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
        assert a.sharding == b.sharding
    assert data2 == data
    assert {k: meta2[k] for k in meta} == meta
    assert meta2["config"] == config and meta2["step"] == 10
    assert {"wall_time", "library_version", "jax_version", "orbax_version"} <= set(meta2)
    assert sorted(os.listdir(tmp_path / "checkpoints" / "10")) == ["_CHECKPOINT_METADATA", "commit_success.txt",
                                                                   "data", "meta", "state"]

    # Restoring into other shardings reads straight into them.
    other = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(mesh, P())), state)
    other = other.replace(params={**other.params, "w": jax.ShapeDtypeStruct((16, 8), jnp.float32,
                                                                           sharding=NamedSharding(mesh, P(None, "d")))})
    with Checkpointer(tmp_path, save_every=10) as ckpt:
        _, restored, _, _ = ckpt.restore_latest(other)
    assert_bit_identical(restored, state)
    assert restored.params["w"].sharding == NamedSharding(mesh, P(None, "d"))
    assert restored.params["b"].sharding == NamedSharding(mesh, P())


def test_bytes_data_state_round_trips(tmp_path, mesh):
    state = make_state(mesh)
    data = b'{"last_seen_indices": {"0": 17}, "worker_count": 0}'  # grain DataLoader iterator state
    with Checkpointer(tmp_path, save_every=1, async_save=False) as ckpt:
        ckpt.save(1, state, data)
        assert ckpt.restore_latest(abstract(state))[2] == data


def test_keep_k(tmp_path, mesh):
    with Checkpointer(tmp_path, save_every=1, keep=2, async_save=False) as ckpt:
        for s in range(1, 6):
            ckpt.save(s, make_state(mesh, s))
        assert ckpt.all_steps() == [4, 5]
    assert sorted(p for p in os.listdir(tmp_path / "checkpoints") if p.isdigit()) == ["4", "5"]


def test_bad_interval_is_a_message(tmp_path):
    for every in (0, -5, 2.5, True):
        with pytest.raises(ValueError, match=f"checkpoint.every must be a whole number of steps >= 1, got {every}"):
            Checkpointer(tmp_path, save_every=every)


def test_metrics_cut_off_mid_write_do_not_block_a_resume(tmp_path, caplog):
    """A crash while writing metrics.jsonl leaves half a line: the resume drops it (and the rows
    past the checkpoint) instead of failing on JSON; a bad line before the end names file and line."""
    from gemini_embed.train.loop import MetricsWriter

    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in (1, 2, 3)) + '{"step": 4, "lo')
    MetricsWriter(tmp_path, resume_step=2, enabled=True).close()
    assert [json.loads(ln)["step"] for ln in path.read_text().splitlines()] == [1, 2]
    assert "cut off mid-write" in caplog.text
    path.write_text('{"step": 1}\n{"step": 2, oops\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: not a JSON metrics row"):
        MetricsWriter(tmp_path, resume_step=3, enabled=True)


def test_every_n(tmp_path, mesh):
    state = make_state(mesh)
    with Checkpointer(tmp_path, save_every=5, async_save=False) as ckpt:
        assert [s for s in range(1, 13) if ckpt.should_save(s)] == [5, 10]
        assert not ckpt.save(3, state)
        assert ckpt.save(5, state)
        assert not ckpt.save(5, state)  # not past the latest step
        assert ckpt.save(7, state, force=True)
        assert ckpt.all_steps() == [5, 7]
        assert [s for s in range(1, 13) if ckpt.should_save(s)] == [10]


def test_async_save_survives_donation_then_restores_after_wait(tmp_path, mesh):
    state = make_state(mesh, 1)
    expected = host(state)
    with Checkpointer(tmp_path, save_every=1, async_save=True) as ckpt:
        assert ckpt.save(1, state, {"pos": 1})
        for x in jax.tree.leaves(state):  # what donating the state to the next step does
            x.delete()
        ckpt.wait()
        step, restored, data, _ = ckpt.restore_latest(abstract(make_state(mesh)))
    assert step == 1 and data == {"pos": 1}
    assert_bit_identical(restored, expected)


# orbax's reader coroutines for the broken file raise again after the event loop closed.
@pytest.mark.filterwarnings("ignore:Exception ignored in:pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("damage", ["truncate", "delete", "flip_bytes"])
def test_corrupt_latest_falls_back_with_warning(tmp_path, mesh, caplog, damage):
    save_steps(tmp_path, mesh, [2, 4])
    victim = data_files(tmp_path / "checkpoints" / "4")[0]
    if damage == "truncate":
        with open(victim, "r+b") as f:
            f.truncate(os.path.getsize(victim) // 2)
    elif damage == "delete":
        victim.unlink()
    else:
        raw = bytearray(victim.read_bytes())
        raw[len(raw) // 2:] = bytes(b ^ 0xFF for b in raw[len(raw) // 2:])
        victim.write_bytes(bytes(raw))

    with caplog.at_level(logging.WARNING, logger=LOGGER), Checkpointer(tmp_path, save_every=1) as ckpt:
        step, state, data, meta = ckpt.restore_latest(abstract(make_state(mesh)))
        assert step == 2 and data == {"pos": 2} and meta["note"] == "step 2"
        assert_bit_identical(state, make_state(mesh, 2))
        assert any("checkpoints/4 does not restore" in r.getMessage() for r in caplog.records)
        assert any("restored step 2 instead of the latest step 4" in r.getMessage() for r in caplog.records)
        # The older checkpoint is kept; the broken one is moved aside, not deleted, and step 4 can be redone.
        names = os.listdir(tmp_path / "checkpoints")
        assert "2" in names and "4" not in names and any(n.startswith("4.corrupt-") for n in names)
        assert ckpt.all_steps() == [2]
        assert ckpt.should_save(4) and ckpt.save(4, make_state(mesh, 44))
        ckpt.wait()
        assert ckpt.restore_latest(abstract(make_state(mesh)))[0] == 4

    # load_params (serving) falls back the same way, without renaming anything.
    save_steps(tmp_path / "w2", mesh, [2, 4])
    data_files(tmp_path / "w2" / "checkpoints" / "4")[0].unlink()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        params, _ = load_params(tmp_path / "w2")
    assert_bit_identical(params, host(make_state(mesh, 2).params))
    assert "4" in os.listdir(tmp_path / "w2" / "checkpoints")
    gc.collect()  # let the failed readers' coroutines report here, under this test's filter


def big_state(mesh, seed):
    """One 256 x 256 leaf: large enough that OCDBT stores it out of line (zstd, no CRC of its own;
    small leaves sit in CRC-checked b-tree nodes)."""
    w = np.random.default_rng(seed).normal(size=(256, 256)).astype(np.float32)
    return {"params": {"w": jax.device_put(w, NamedSharding(mesh, P("d")))}}


def test_a_flipped_bit_fails_the_checksum_and_falls_back(tmp_path, mesh, caplog):
    with Checkpointer(tmp_path, save_every=1, async_save=False) as ckpt:
        for step in (2, 4):
            ckpt.save(step, big_state(mesh, step), {"pos": step})
    victim = max((f for f in (tmp_path / "checkpoints" / "4").rglob("*") if f.is_file()), key=os.path.getsize)
    good = victim.read_bytes()
    found = None
    for pos in range(len(good) // 2, len(good), 997):  # most single flips decode (to wrong floats); some do not
        bad = bytearray(good)
        bad[pos] ^= 1
        victim.write_bytes(bytes(bad))
        with Checkpointer(tmp_path, save_every=1) as ckpt, pytest.raises(Exception) as e:
            ckpt.restore(4, abstract(big_state(mesh, 0)))
        if "checksum mismatch in [\"['params']['w']\"]" in str(e.value):
            found = pos
            break
    assert found is not None, "no single-bit flip decoded to other values"
    with caplog.at_level(logging.WARNING, logger=LOGGER), Checkpointer(tmp_path, save_every=1) as ckpt:
        step, state, _, _ = ckpt.restore_latest(abstract(big_state(mesh, 0)))
    want = np.asarray(big_state(mesh, 2)["params"]["w"])
    assert step == 2 and np.array_equal(np.asarray(state["params"]["w"]), want)
    assert any("checksum mismatch" in r.getMessage() for r in caplog.records)
    # Serving reads (load_params) check the same sums (a second workdir, the same flip).
    with Checkpointer(tmp_path / "w2", save_every=1, async_save=False) as ckpt:
        for step in (2, 4):
            ckpt.save(step, big_state(mesh, step), {"pos": step})
    victim = max((f for f in (tmp_path / "w2" / "checkpoints" / "4").rglob("*") if f.is_file()), key=os.path.getsize)
    raw = bytearray(victim.read_bytes())
    raw[found] ^= 1  # same data, same compression: the same flip decodes to other values again
    victim.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        params, _ = load_params(tmp_path / "w2")
    assert np.array_equal(params["w"], want)


def test_unfinished_saves_are_skipped(tmp_path, mesh, caplog):
    save_steps(tmp_path, mesh, [2, 4])
    ckpts = tmp_path / "checkpoints"
    # Simulated crashes mid-save: orbax writes into <step>.orbax-checkpoint-tmp and renames it
    # to <step> once finished (local disk), so an interrupted save leaves the tmp dir (a SIGKILL during
    # an asynchronous save leaves exactly this, data files partly written); an object store
    # (no atomic rename) leaves <step>/ whose items never got written.
    (ckpts / "4").rename(ckpts / "6.orbax-checkpoint-tmp")
    for f in data_files(ckpts / "6.orbax-checkpoint-tmp")[1:]:
        f.unlink()
    (ckpts / "8" / "state" / "d").mkdir(parents=True)
    with caplog.at_level(logging.WARNING, logger=LOGGER), Checkpointer(tmp_path, save_every=1) as ckpt:
        step, state, data, _ = ckpt.restore_latest(abstract(make_state(mesh)))
    assert step == 2 and data == {"pos": 2}
    assert_bit_identical(state, make_state(mesh, 2))
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "ignoring unfinished save(s) ['6.orbax-checkpoint-tmp']" in messages
    assert "checkpoints/8 does not restore" in messages
    assert (ckpts / "2").exists() and (ckpts / "6.orbax-checkpoint-tmp").exists()


def test_wrong_target_raises_and_renames_nothing(tmp_path, mesh):
    save_steps(tmp_path, mesh, [2, 4])
    wrong = abstract(make_state(mesh))
    wrong = wrong.replace(params={**wrong.params, "w": jax.ShapeDtypeStruct((8, 8), jnp.float32,
                                                                           sharding=NamedSharding(mesh, P()))})
    with Checkpointer(tmp_path, save_every=1) as ckpt, pytest.raises(CheckpointRestoreError):
        ckpt.restore_latest(wrong)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]


@pytest.mark.parametrize("leaf,bad", [("w", jnp.nan), ("emb", jnp.inf), ("mu", -jnp.inf)])
def test_non_finite_state_is_never_saved(tmp_path, mesh, leaf, bad):
    state = make_state(mesh)
    if leaf == "mu":
        state = state.replace(opt_state={**state.opt_state, "mu": state.opt_state["mu"].at[13, 2].set(bad)})
    else:
        state = state.replace(params={**state.params, leaf: state.params[leaf].at[1, 3].set(bad)})
    with Checkpointer(tmp_path, save_every=5, async_save=True) as ckpt:
        assert not ckpt.save(3, state)  # not a save step: nothing checked, nothing written
        with pytest.raises(NonFiniteStateError, match=leaf):
            ckpt.save(5, state)
        with pytest.raises(NonFiniteStateError):
            ckpt.save(6, state, force=True)
        ckpt.wait()
        assert ckpt.all_steps() == []
        assert ckpt.restore_latest(abstract(state)) is None
    assert not [p for p in os.listdir(tmp_path / "checkpoints") if p[0].isdigit()]
    if leaf in state.params:
        with pytest.raises(NonFiniteStateError, match=leaf):
            export_params(state.params, tmp_path / "export", {})
        assert not (tmp_path / "export").exists()


def test_export_and_load_params(tmp_path, mesh):
    state = make_state(mesh, 7)
    model_config = {"family": "gemma3", "d_model": 16, "mrl_dims": [4, 8], "projection": None}
    export_params(state.params, tmp_path / "export", model_config)
    assert sorted(os.listdir(tmp_path / "export")) == ["config.json", "params"]
    with pytest.raises(FileExistsError):
        export_params(state.params, tmp_path / "export", model_config)

    params, config = load_params(tmp_path / "export")
    assert config == model_config
    assert all(isinstance(x, np.ndarray) for x in jax.tree.leaves(params))
    assert_bit_identical(params, host(state.params))

    save_steps(tmp_path / "work", mesh, [5, 7], config={"model": model_config})
    for path in (tmp_path / "work", tmp_path / "work" / "checkpoints"):
        params, config = load_params(path)
        assert config == {"model": model_config}
        assert all(isinstance(x, np.ndarray) for x in jax.tree.leaves(params))
        assert_bit_identical(params, host(make_state(mesh, 7).params))

    export_params(make_state(mesh, 8).params, tmp_path / "export", {"v": 2}, overwrite=True)
    params, config = load_params(tmp_path / "export")
    assert config == {"v": 2}
    assert_bit_identical(params, host(make_state(mesh, 8).params))

    with pytest.raises(FileNotFoundError):
        load_params(tmp_path / "empty")


def test_relative_workdir_saves_and_restores(tmp_path, mesh, monkeypatch):
    # The README's command passes `--workdir runs/quickstart`; orbax refuses relative paths itself.
    monkeypatch.chdir(tmp_path)
    state = make_state(mesh, 4)
    with Checkpointer("runs/rel", save_every=1, async_save=False) as ckpt:
        assert ckpt.save(1, state, {"next_index": 1})
    monkeypatch.chdir("/")
    with Checkpointer(tmp_path / "runs" / "rel", save_every=1) as ckpt:
        step, restored, data, _ = ckpt.restore_latest(abstract(state))
    assert step == 1 and data == {"next_index": 1}
    assert_bit_identical(restored, state)
    # ...and `evaluate --model runs/rel` / `Embedder.from_pretrained("runs/rel")` read it back from
    # a relative path (this used to fail on every checkpoint, then on the export)
    monkeypatch.chdir(tmp_path)
    assert_bit_identical(load_params("runs/rel")[0], host(state.params))
    export_params(state.params, "runs/export", {"v": 1})
    assert_bit_identical(load_params("runs/export")[0], host(state.params))
