"""Compile-only mode of the train command: prove a config shards, fits and communicates on a pod
without one (and without weights).

    python -m gemini_embed.main --config experiments/gemma3_27b_pod.py --workdir runs/c27 \\
        --compile_only --topology v5e:16x16

Builds the mesh over the topology's devices (TPU device descriptions from libtpu, which compiles
for a pod on a CPU-only machine; or `cpu:N` local devices), lowers and compiles the real train
step (train/step.py, gradient cache included) and the embed function on abstract inputs
(ShapeDtypeStructs with shardings: nothing is allocated), and writes DIR/compile_report.json:
bytes per chip, FLOPs per step, the collectives with their bytes per step, a modelled step time
and MFU from the chip's published figures, and the all-gather that serves the in-batch negatives.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gemini_embed import sharding
from gemini_embed.pretrained import architecture
from gemini_embed.train import hlo_costs, setup
from gemini_embed.train.state import with_shardings
from gemini_embed.train.step import memory_report

log = logging.getLogger("gemini_embed.compile")
GiB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class Chip:
    name: str
    peak_flops: float  # bf16 FLOP/s per chip
    hbm_bytes: float
    ici_bytes_per_s: float  # per chip, one direction
    hbm_bytes_per_s: float


# Published per-chip figures (Google Cloud TPU docs, cloud.google.com/tpu/docs/{v5e,v5p-training,v4}).
# HBM bandwidth: v5e 819 GBps, v5p 2765 GBps, v4 1200 GBps (the pages' "HBM capacity and bandwidth").
# ICI: the docs' "Interchip Interconnect BW" in Gbps / 8 (v5e 1600 Gbps, v5p 4800 Gbps; half the
# "bidirectional" 400 / 1200 GBps rows). v4's page gives no per-chip ICI figure: 2400 Gbps is an
# assumption (6 links, TPU v4 paper, Jouppi et al. 2023), not a published Cloud number.
CHIPS = {
    "v5e": Chip("TPU v5e", 197e12, 16 * GiB, 1600e9 / 8, 819e9),
    "v5p": Chip("TPU v5p", 459e12, 95 * GiB, 4800e9 / 8, 2765e9),
    "v4": Chip("TPU v4", 275e12, 32 * GiB, 2400e9 / 8, 1200e9),
}
# Each TPU VM host drives 2x2 chips in the slices we target (v5e training hosts, v4, v5p).
_HOST_BOUNDS = (2, 2, 1)


class DoesNotFitError(RuntimeError):
    """The compiled step needs more memory per chip than the chip has."""


def topology_devices(topology: str) -> tuple[list, Chip | None]:
    """Devices of 'v5e:16x16', 'v5p:4x4x8', 'v4:4x4x4' (TPU descriptions; nothing runs on them) or
    'cpu:N' (N local CPU devices), and the chip's figures (None for CPU)."""
    gen, _, shape = topology.partition(":")
    if gen == "cpu":
        if not shape.isdigit() or int(shape) < 1:
            raise ValueError(f"--topology {topology!r}: expected cpu:N with N >= 1")
        have = jax.devices("cpu")
        if len(have) < int(shape):
            raise ValueError(f"--topology {topology!r} needs {shape} CPU devices, this process has {len(have)} "
                             f"(set XLA_FLAGS=--xla_force_host_platform_device_count={shape} before jax starts)")
        return have[:int(shape)], None
    if gen not in CHIPS or not re.fullmatch(r"\d+(x\d+){1,2}", shape):
        raise ValueError(f"--topology {topology!r}: expected one of {', '.join(CHIPS)} or cpu, then ':' and a "
                         f"chip grid such as v5e:16x16, v5p:4x4x8, v4:4x4x4, cpu:8")
    # libtpu reads these when it loads: without them it warns that it cannot find a TPU host,
    # and refuses a second process (its lockfile guards chips that compile-only never touches).
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", f"{'v5litepod' if gen == 'v5e' else gen}-{_num_chips(shape)}")
    try:
        from jax.experimental import topologies

        desc = topologies.get_topology_desc(platform="tpu", topology_name=topology, chip_config_name="default",
                                            chips_per_host_bounds=_HOST_BOUNDS, num_slices=1)
    except Exception as e:  # libtpu missing, or a grid it does not know
        raise RuntimeError(f"cannot build TPU topology {topology!r} ({e}); compiling for TPU on this machine "
                           f"needs libtpu: pip install -e '.[tpu]'") from e
    return list(desc.devices), CHIPS[gen]


def _num_chips(shape: str) -> int:
    return int(np.prod([int(s) for s in shape.split("x")]))


def _mesh(c, devices):
    mesh = sharding.make_mesh(c.mesh.data, c.mesh.fsdp, c.mesh.tensor, devices=devices)
    if devices[0].platform == "tpu":  # lay the axes along the torus (fsdp / tensor rings on ICI)
        from jax.experimental import mesh_utils

        try:
            grid = mesh_utils.create_device_mesh(mesh.devices.shape, devices=devices, allow_split_physical_axes=True)
            mesh = sharding.make_mesh(*grid.shape, devices=list(grid.flat))
        except (NotImplementedError, ValueError) as e:  # keep the plain order: still compiles
            log.warning("no torus-aware device order for mesh %s: %s", dict(mesh.shape), e)
    return mesh


def _negatives_collectives(colls, global_batch: int, dims) -> list[dict]:
    """The collectives that bring the global batch's [global_batch, d] embeddings (d = the output
    dim or an MRL prefix) to every chip for the loss: an all-gather for the similarity einsum
    (TPU gathers [devices, rows per device, d] and bitcasts it), or, under the gradient cache, an
    all-reduce of the re-laid-out chunks (XLA combines the MRL prefixes into one tuple)."""
    out = []
    for col in colls:
        loss_gather = col.kind == "all-gather" and "jd->ij" in col.op_name
        if not (loss_gather or col.kind == "all-reduce"):
            continue
        for array in col.arrays or (col.shape,):
            shape = [int(x) for x in re.findall(r"\d+", array.split("[", 1)[1].split("]")[0])]
            if len(shape) >= 2 and shape[-1] in dims and int(np.prod(shape[:-1])) == global_batch:
                elem = {"f32": 4, "bf16": 2, "f16": 2}.get(array.split("[")[0], 0)
                out.append({"kind": col.kind, "shape": array, "bytes": global_batch * shape[-1] * elem,
                            "runs": col.runs, "op_name": col.op_name,
                            "formula": f"{global_batch} x {shape[-1]} x {elem} = {global_batch * shape[-1] * elem}"})
    return out


def _activation_gathers(colls, seq_lens) -> list[dict]:
    """All-gathers of per-token activations (arrays with a sequence-length dim; no Gemma 3 weight
    has a dim of 512; integer token ids are left out): with batch-sharded activations there
    should be none."""
    out = []
    for col in colls:
        dims = [int(d) for d in re.findall(r"\d+", col.shape.split("[", 1)[1].split("]")[0])]
        floating = col.shape.split("[", 1)[0] in ("f32", "bf16", "f16", "f64")  # token ids are not activations
        if col.kind == "all-gather" and floating and len(dims) >= 3 and any(s in dims for s in seq_lens):
            out.append({"shape": col.shape, "bytes": col.bytes, "runs": col.runs, "op_name": col.op_name})
    return out


def _biggest_arguments(abstract_state, n: int = 5) -> list[str]:
    rows = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(abstract_state):
        shard = leaf.sharding.shard_shape(leaf.shape)
        rows.append((int(np.prod(shard)) * leaf.dtype.itemsize, jax.tree_util.keystr(path), leaf.shape, shard))
    rows.sort(key=lambda r: -r[0])
    return [f"{p} {tuple(s)} -> per chip {tuple(sh)}: {b / GiB:.2f} GiB" for b, p, s, sh in rows[:n]]


def _compile(lowered, *, what: str, abstract_state=None, hbm: float | None):
    try:
        return lowered.compile()
    except Exception as e:  # the TPU compiler's own out-of-memory report names its largest buffers
        text = str(e)
        if "RESOURCE_EXHAUSTED" not in text and "Ran out of memory" not in text:
            raise
        args_note = "\n  ".join(_biggest_arguments(abstract_state)) if abstract_state is not None else ""
        raise DoesNotFitError(f"{what} does not fit in {hbm / GiB if hbm else '?'} GiB per chip. Largest state "
                              f"buffers:\n  {args_note}\nCompiler report:\n{text[:4000]}") from None


def compile_report(c, topology: str, hbm_gib: float | None = None) -> dict:
    """Compile the train step and embed function of config `c` for `topology`; the report dict."""
    devices, chip = topology_devices(topology)
    hbm = hbm_gib * GiB if hbm_gib else (chip.hbm_bytes if chip else None)
    model_cfg = architecture(c.model.name, **dict(c.model.get("overrides", {})))
    run = setup.build(c, model_cfg, _mesh(c, devices))  # exactly what train/loop.py compiles
    model, mesh, abstract, k = run.model, run.mesh, run.abstract_state, run.num_negatives
    b, lq, lp = c.train.global_batch_size, c.data.query_len, c.data.positive_len
    lowered = run.lower()
    compiled = _compile(lowered, what="the train step", abstract_state=abstract, hbm=hbm)
    memory = memory_report(compiled)
    memory["total"] = memory["argument"] + memory["output"] - memory["alias"] + memory["temp"]
    if hbm and memory["total"] > hbm:
        raise DoesNotFitError(f"{c.model.name} on {topology}: the train step needs {memory['total'] / GiB:.2f} GiB "
                              f"per chip, the chip has {hbm / GiB:.1f} GiB (arguments {memory['argument'] / GiB:.2f}, "
                              f"temporaries {memory['temp'] / GiB:.2f}). Largest state buffers:\n  "
                              + "\n  ".join(_biggest_arguments(abstract)))

    hlo_text = compiled.as_text()
    comps = hlo_costs.parse(hlo_text)
    counts, notes = hlo_costs.run_counts(comps)
    colls = hlo_costs.collectives(comps, counts, len(devices))
    cost = compiled.cost_analysis() or {}
    cost = cost[0] if isinstance(cost, list) else cost
    flops_xla = float(cost.get("flops", 0.0))
    flops = flops_xla + hlo_costs.loop_extra_flops(comps)  # per chip, loops counted trip-count times
    by_kind = {k: sum(x.bytes_per_step for x in colls if x.kind == k) for k in hlo_costs.COLLECTIVES}
    useful = setup.model_flops_per_step(model_cfg, b, lq) + setup.model_flops_per_step(model_cfg, b * (1 + k), lp)
    report = {
        "topology": topology, "chips": len(devices), "chip": chip.name if chip else "cpu",
        "model": c.model.name, "params": int(sum(np.prod(x.shape) for x in jax.tree.leaves(abstract.params))),
        "mesh": dict(mesh.shape), "global_batch": b, "query_len": lq, "positive_len": lp, "num_negatives": k,
        "grad_cache_chunk_size": int(c.train.grad_cache_chunk_size),
        "train_step_program": setup.fingerprint(lowered),
        "compute_dtype": str(getattr(model_cfg.encoder, "dtype", "float32")),
        "remat": bool(getattr(model_cfg.encoder, "remat", False)),
        "memory_per_chip": memory, "hbm_per_chip": hbm,
        "flops_per_step_per_chip": flops, "flops_cost_analysis_per_chip": flops_xla,
        "matmul_flops_hlo_per_chip": hlo_costs.matmul_flops(comps, counts)[0],
        "model_flops_per_step": useful, "collective_bytes_per_step_per_chip": by_kind,
        "collectives": [dataclasses.asdict(x) | {"bytes_per_step": x.bytes_per_step} for x in colls[:40]],
        "hlo_notes": notes,
        "negatives_collectives": _negatives_collectives(colls, b, set(run.loss.mrl_dims or model_cfg.mrl_dims)
                                                   | {model_cfg.output_dim}),
        "activation_all_gathers": _activation_gathers(colls, {lq, lp}),
    }
    if chip:
        report["modelled"] = modelled_step(comps, counts, colls, flops, useful, chip, len(devices))
    try:  # the serving path: reported, but not what this mode is asked to prove
        report["embed_fn"] = _embed_report(model, mesh, b, lp, hbm)
    except DoesNotFitError as e:
        report["embed_fn"] = {"rows": b, "length": lp, "error": str(e)[:2000]}
    report["_hlo_text"] = hlo_text  # written next to the report by run(), not into the JSON
    return report


def modelled_step(comps, counts, colls, flops: float, useful: float, chip: Chip, chips: int) -> dict:
    """The step time from the chip's published figures. Assumptions: the program's ops run one
    after another, each taking max(its matmul FLOPs / peak, its HBM bytes / HBM bandwidth) (compute
    and memory traffic of one op overlap); collectives overlap fully with the ops (TPU runs them
    asynchronously), so step = max(sum of the ops' times, ICI time). An upper bound on speed: kernel
    efficiency below peak and exposed collectives are not modelled."""
    ops = hlo_costs.op_costs(comps, counts)
    t_ops = [o.seconds(chip.peak_flops, chip.hbm_bytes_per_s) * o.runs for o in ops]
    hbm_bound = sum(t for o, t in zip(ops, t_ops) if o.bytes / chip.hbm_bytes_per_s > o.flops / chip.peak_flops)
    t_ici = sum((2 if x.kind == "all-reduce" else 1) * x.bytes_per_step * (x.group - 1) / max(x.group, 1)
                for x in colls) / chip.ici_bytes_per_s
    step = max(sum(t_ops), t_ici)
    bound = "ICI" if t_ici > sum(t_ops) else ("HBM" if hbm_bound > sum(t_ops) / 2 else "compute")
    top = sorted(zip(t_ops, ops), key=lambda x: -x[0])[:5]
    return {"peak_flops_per_chip": chip.peak_flops, "ici_bytes_per_s_per_chip": chip.ici_bytes_per_s,
            "hbm_bytes_per_s_per_chip": chip.hbm_bytes_per_s,
            "compute_s": flops / chip.peak_flops, "hbm_s": sum(o.bytes * o.runs for o in ops) / chip.hbm_bytes_per_s,
            "hbm_bytes_per_step": sum(o.bytes * o.runs for o in ops), "ops_s": sum(t_ops),
            "hbm_bound_ops_s": hbm_bound, "ici_s": t_ici, "step_s": step, "bound": bound,
            "mfu": useful / (step * chip.peak_flops * chips) if step else 0.0,
            "costliest_ops": [{"name": o.name, "op": o.op, "s_per_step": t, "runs": o.runs, "flops": o.flops,
                               "bytes": o.bytes} for t, o in top]}


def _embed_report(model, mesh, rows: int, length: int, hbm) -> dict:
    """The serving path: embed.make_embed_fn on [rows, length] tokens."""
    from gemini_embed.embed import make_embed_fn

    boxed = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32), jnp.ones((1, 8), bool))
    param_sh = sharding.param_shardings(boxed, mesh)
    params = with_shardings(nn.meta.unbox(boxed), param_sh)
    tok = jax.ShapeDtypeStruct((rows, length), jnp.int32, sharding=sharding.batch_sharding(mesh))
    mask = jax.ShapeDtypeStruct((rows, length), bool, sharding=sharding.batch_sharding(mesh))
    compiled = _compile(make_embed_fn(model, mesh, param_sh).lower(params, tok, mask), what="the embed function",
                        hbm=hbm)
    mem = memory_report(compiled)
    cost = compiled.cost_analysis() or {}
    cost = cost[0] if isinstance(cost, list) else cost
    return {"rows": rows, "length": length, "memory_per_chip": mem | {"total": mem["argument"] + mem["output"]
                                                                       - mem["alias"] + mem["temp"]},
            "flops_per_call_per_chip": float(cost.get("flops", 0.0))}


def format_report(r: dict) -> str:
    """The printed summary of a report."""
    m, hbm = r["memory_per_chip"], r["hbm_per_chip"]
    rows = [("model / topology", f"{r['model']} ({r['params'] / 1e9:.2f}B params) on {r['topology']} "
                                 f"({r['chips']} x {r['chip']}), mesh {r['mesh']}"),
            ("batch", f"{r['global_batch']} x ({r['query_len']} + {1 + r['num_negatives']} x {r['positive_len']}) "
                      f"tokens, grad cache chunk "
                      f"{r['grad_cache_chunk_size'] or '-'}, {r['compute_dtype']} compute, remat {r['remat']}"),
            ("bytes per chip", f"arguments {m['argument'] / GiB:.2f} GiB, outputs {m['output'] / GiB:.2f} GiB "
                               f"(aliased {m['alias'] / GiB:.2f}), temporaries {m['temp'] / GiB:.2f} GiB, total "
                               f"{m['total'] / GiB:.2f} GiB" + (f" of {hbm / GiB:.0f} GiB HBM" if hbm else "")),
            ("FLOPs per step", f"{r['flops_per_step_per_chip']:.3e} per chip (cost analysis {r['flops_cost_analysis_per_chip']:.3e}"
                               f" + loop trips); model FLOPs {r['model_flops_per_step']:.3e} for all chips")]
    for kind, nbytes in r["collective_bytes_per_step_per_chip"].items():
        rows.append((kind, f"{nbytes / 2**20:,.1f} MiB per step per chip"))
    for g in r["negatives_collectives"]:
        rows.append((f"negatives {g['kind']}", f"{g['shape']} = {g['bytes']:,} bytes x {g['runs']} "
                                             f"(global_batch x dim x bytes: {g['formula']})"))
    rows.append(("activation all-gathers", str(len(r["activation_all_gathers"]))))
    if "modelled" in r:
        t = r["modelled"]
        rows.append(("modelled step", f"{t['step_s']:.3f} s = max(ops {t['ops_s']:.3f} s, ICI {t['ici_s']:.3f} s at "
                                      f"{t['ici_bytes_per_s_per_chip'] / 1e9:.0f} GB/s), {t['bound']}-bound; expected "
                                      f"MFU {t['mfu']:.1%}"))
        rows.append(("ops", f"each max(FLOPs at {t['peak_flops_per_chip'] / 1e12:.0f} TFLOP/s, bytes at "
                            f"{t['hbm_bytes_per_s_per_chip'] / 1e9:.0f} GB/s): compute alone {t['compute_s']:.3f} s, "
                            f"HBM alone {t['hbm_s']:.3f} s ({t['hbm_bytes_per_step'] / GiB:.1f} GiB), in HBM-bound ops "
                            f"{t['hbm_bound_ops_s']:.3f} s"))
    e = r["embed_fn"]
    rows.append(("embed function", f"[{e['rows']}, {e['length']}]: " + (e["error"].splitlines()[0] if "error" in e else
                 f"{e['memory_per_chip']['total'] / GiB:.2f} GiB per chip, {e['flops_per_call_per_chip']:.3e} FLOPs "
                 f"per chip")))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def request_cpu_devices(topology: str | None) -> None:
    """cpu:N needs N local CPU devices: ask for them before jax starts its backend, unless
    XLA_FLAGS already fixes the count (the tests' 8 devices)."""
    m = re.fullmatch(r"cpu:(\d+)", topology or "")
    if m and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        try:
            jax.config.update("jax_num_cpu_devices", int(m.group(1)))
        except RuntimeError:  # the backend already started: topology_devices says what is missing
            pass


def run(c, workdir: str, topology: str | None = None, hbm_gib: float | None = None) -> dict:
    """Compile, write WORKDIR/compile_report.json, print the table. Raises DoesNotFitError.
    topology None: all local CPU devices."""
    request_cpu_devices(topology)
    report = compile_report(c, topology or f"cpu:{len(jax.devices('cpu'))}", hbm_gib)
    out = pathlib.Path(workdir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_step.hlo.txt").write_text(report.pop("_hlo_text"))  # the evidence behind the numbers
    (out / "compile_report.json").write_text(json.dumps(report, indent=1, default=str))
    print(format_report(report), flush=True)
    return report
