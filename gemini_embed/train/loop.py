"""The training loop: build, compile ahead of time, resume, step, log, checkpoint, evaluate.

Loop step k runs global batch k of the grain pipeline (data/pipeline.py: a pure function of the
data config and k); its iterator state is saved with each checkpoint, so a restart from step s
sees exactly the batches an uninterrupted run sees.
"""
from __future__ import annotations

import json
import logging
import pathlib
import time

import jax
import jax.numpy as jnp
from tqdm.auto import tqdm

from gemini_embed import sharding
from gemini_embed.data import pipeline as data_pipeline
from gemini_embed.embed import Embedder
from gemini_embed.pretrained import resolve
from gemini_embed.train import provenance, setup, state as state_lib
from gemini_embed.train.checkpoint import Checkpointer
from gemini_embed.train.step import compile_train_step

log = logging.getLogger("gemini_embed.train")


def measured_peak_flops(sizes=(1024, 2048), reps: int = 10) -> float:
    """FLOP/s of float32 matmuls on all local devices at once, the best over `sizes` (n x n x n) and
    `reps` timings each: the machine's practical peak, the denominator of MFU, measured the same way
    in every run and written to every metrics row. Simulated CPU devices share the cores, as they
    should. Best of many: on the 2-core VM single 1024^3 timings vary 2x, and a low peak would
    overstate MFU."""
    devices = jax.local_devices()
    mesh = sharding.make_mesh(devices=devices)
    f = jax.jit(lambda a: a @ a)
    best = 0.0
    for n in sizes:
        x = jax.device_put(jnp.ones((len(devices), n, n), jnp.float32), sharding.batch_sharding(mesh, 3))
        f(x).block_until_ready()
        for _ in range(reps):
            t = time.perf_counter()
            f(x).block_until_ready()
            best = max(best, 2 * n ** 3 * len(devices) / (time.perf_counter() - t))
    return best


class MetricsWriter:
    """metrics.jsonl (one line per logged step, exactly once across restarts) and TensorBoard."""

    def __init__(self, workdir: pathlib.Path, resume_step: int, enabled: bool):
        self.enabled = enabled
        self.path = workdir / "metrics.jsonl"
        self.last: dict | None = None  # the latest row written (the closing summary's figures)
        if not enabled:
            return
        if self.path.exists():  # drop lines past the checkpoint we resume from: they are re-run
            keep = [ln for ln in self._rows() if json.loads(ln)["step"] <= resume_step]
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text("".join(ln + "\n" for ln in keep))
            tmp.replace(self.path)
        from tensorboardX import SummaryWriter

        self.tb = SummaryWriter(str(workdir / "tensorboard"))

    def _rows(self) -> list[str]:
        """The file's complete lines. A last line cut off by a crash mid-write is dropped (its step
        is re-run); a bad line before it is an error naming the file and line."""
        lines = [ln for ln in self.path.read_text().splitlines() if ln.strip()]
        for i, ln in enumerate(lines):
            try:
                json.loads(ln)
            except json.JSONDecodeError:
                if i == len(lines) - 1:
                    log.warning("%s: dropping its last line, cut off mid-write: %.80s", self.path, ln)
                    return lines[:-1]
                raise ValueError(f"{self.path}:{i + 1}: not a JSON metrics row ({ln[:80]!r}); fix or delete "
                                 f"the line to resume") from None
        return lines

    def write(self, row: dict):
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        self.last = row
        for k, v in row.items():
            if k != "step" and isinstance(v, (int, float)):
                self.tb.add_scalar(k, v, row["step"])

    def close(self):
        if self.enabled:
            self.tb.close()


def evaluate_params(pretrained, params, tasks: str, batch_size: int = 64) -> dict:
    from gemini_embed.eval import runner

    model = Embedder(pretrained.config, params, pretrained.tokenizer, max_length=pretrained.max_length,
                     uses_prompts=pretrained.uses_prompts, name=pretrained.name)
    return runner.evaluate(lambda t, task=None, titles=None: model.embed(t, task=task, titles=titles,
                                                                         batch_size=batch_size),
                           tasks, use_prompts=pretrained.uses_prompts, progress=False)


LOSS_TERMS = ("nce_loss", "cosent_loss", "distill_loss", "spread_out_loss")  # the parts of "loss", when present
MODEL_KEYS = ("name", "encoder_type", "encoder", "projection", "mrl_dims")  # what a resume must not change


def _check_same_model(meta: dict | None, spec: dict, workdir: pathlib.Path) -> None:
    """A workdir resumes only the model it was started with (a model with the same shapes would
    otherwise restore without a word)."""
    before = ((meta or {}).get("config") or {}).get("model")
    if not before:
        return
    now = json.loads(json.dumps(spec))
    changed = [k for k in MODEL_KEYS if before.get(k) != now.get(k)]
    if changed:
        detail = "; ".join(f"{k}: {json.dumps(before.get(k))[:80]} -> {json.dumps(now.get(k))[:80]}" for k in changed)
        raise ValueError(f"{workdir} holds checkpoints of another model ({detail}); use a new workdir, or "
                         f"model.init_from={workdir} to start from its params")


def train(config, workdir: str) -> dict:
    """Run (or resume) the training job described by an ml_collections config. Returns a summary."""
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    lead = jax.process_index() == 0
    c = config
    model_overrides = dict(c.model.get("overrides", {}))
    # A later stage starts from an earlier run's params (a workdir or export) with a fresh optimizer.
    init_from = str(pathlib.Path(c.model.init_from).resolve()) if c.model.get("init_from") else None
    pretrained = resolve(init_from, max_length=model_overrides.get("max_length")) if init_from else \
        resolve(c.model.name, **model_overrides)
    mesh = sharding.make_mesh(c.mesh.data, c.mesh.fsdp, c.mesh.tensor)
    run = setup.build(c, pretrained.config, mesh)
    model, shardings, abstract = run.model, run.shardings, run.abstract_state
    meta_config = {"train": c.to_dict(), "model": pretrained.spec()}
    ckpt = Checkpointer(workdir, save_every=c.checkpoint.every, keep=c.checkpoint.keep, config=meta_config)

    _check_same_model(ckpt.latest_meta(), meta_config["model"], workdir)
    restored = ckpt.restore_latest(abstract)
    if restored is not None:
        start, state, data_state, _ = restored
        if start >= c.train.steps:  # nothing left: no pipeline, no compilation
            ckpt.close()
            if lead:
                print(f"{workdir}: already trained to step {start} of {c.train.steps}; nothing to do "
                      f"(raise train.steps to continue)", flush=True)
            return {"steps": c.train.steps, "resumed_from": start, "already_done": True}
        log.info("resumed from step %d (%s)", start, data_state)
    else:
        start = 0
        if lead:
            provenance.write(workdir, provenance.for_run(c.to_dict(), init_from))
        state = state_lib.init_train_state(model, run.optim, run.loss, jax.random.key(c.train.seed),
                                           params=pretrained.params, shardings=shardings)
    peak = measured_peak_flops()  # before the data pipeline's threads start competing for the cores
    # The distillation teacher embeds each batch's texts on this host's first device, in the data threads.
    teacher = None
    if run.loss.distill_weight:
        teacher = Embedder.from_pretrained(run.loss.distill_teacher,
                                           mesh=sharding.make_mesh(devices=jax.local_devices()[:1]))
    data = data_pipeline.from_config(c.data, c.train.global_batch_size, pretrained.tokenizer,
                                     uses_prompts=pretrained.uses_prompts, seed=c.train.seed,
                                     process_index=jax.process_index(), process_count=jax.process_count(),
                                     verbose=lead, teacher=teacher)
    if start and not data_state:
        raise ValueError(f"{workdir}: the checkpoint of step {start} holds no data-iterator state, so the run "
                         f"cannot resume exactly; start a new workdir (model.init_from={workdir} keeps its params)")
    batches = data.iterator(data_state if start else None)
    if (data.shape.num_negatives, data.shape.scored, data.teacher_dim) != (run.num_negatives, run.scored,
                                                                          run.teacher_dim):
        raise AssertionError(f"pipeline batch {data.shape} (teacher dim {data.teacher_dim}) differs from the "
                             f"compiled step's (negatives {run.num_negatives}, scored {run.scored}, "
                             f"teacher dim {run.teacher_dim})")
    lowered = run.lower()
    compiled, memory = compile_train_step(lowered)
    flops = float((compiled.cost_analysis() or {}).get("flops", 0.0))
    # Useful FLOPs of a full step (6 x matmul params x tokens + attention, no padding, remat or
    # recompute): scaled by the non-padding share of each logged interval, the numerator of MFU.
    useful = (setup.model_flops_per_step(pretrained.config, c.train.global_batch_size, c.data.query_len)
              + setup.model_flops_per_step(pretrained.config, c.train.global_batch_size * (1 + run.num_negatives),
                                     c.data.positive_len))
    if lead:
        print(f"compiled train step: {flops / 1e9:.1f} GFLOP/step; memory per device "
              + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in memory.items())
              + f"; measured peak {peak / 1e9:.1f} GFLOP/s", flush=True)

    before = None
    if c.eval.tasks and start == 0 and lead and jax.process_count() == 1:
        before = evaluate_params(pretrained, jax.device_get(state.model_params), c.eval.tasks)
    writer = MetricsWriter(workdir, start, enabled=lead)
    bad_in_a_row, t_last, n_since, real_since = 0, time.perf_counter(), 0, 0
    # Tokens the step computes (padding included), and below the non-padding ones actually fed.
    tokens_per_step = c.train.global_batch_size * (c.data.query_len + (1 + run.num_negatives) * c.data.positive_len)
    masks = ("query_mask", "positive_mask", "negative_mask")
    bar = tqdm(range(start, c.train.steps), initial=start, total=c.train.steps, desc="train", disable=not lead)
    ckpt.catch_sigterm()
    preempted_at = None
    for k in bar:
        ckpt.check()  # a failed background save stops the run here, not one save interval later
        host = next(batches)
        source = data.names[int(host["dataset"])]
        batch = data_pipeline.global_batch(host, mesh)
        state, metrics = compiled(state, batch)
        n_since += 1
        real_since += jax.process_count() * sum(int(host[m].sum()) for m in masks if m in host)
        step = k + 1
        skipped = int(metrics["skipped"])
        bad_in_a_row = bad_in_a_row + 1 if skipped else 0
        if bad_in_a_row >= c.train.max_bad_steps:
            ckpt.close()
            raise FloatingPointError(f"{bad_in_a_row} consecutive steps had a non-finite loss or gradient "
                                     f"(last at step {step}); no update was applied and no NaN was saved. "
                                     f"Lower optim.lr or check the data of batch {k}.")
        if step % c.train.log_every == 0 or step == c.train.steps:
            m = {k2: float(v) for k2, v in jax.device_get(metrics).items()}
            dt = (time.perf_counter() - t_last) / n_since
            real = real_since / n_since / tokens_per_step  # the non-padding share of the computed tokens
            row = {"step": step, "loss": m["loss"], "in_batch_accuracy": m["in_batch_accuracy"],
                   "learning_rate": m["learning_rate"], "grad_norm": m["grad_norm"],
                   "temperature": m["temperature"], "skipped_total": int(m["skipped_total"]),
                   "examples_per_sec": c.train.global_batch_size / dt, "tokens_per_sec": real * tokens_per_step / dt,
                   "padded_tokens_per_sec": tokens_per_step / dt, "padding": 1 - real,
                   "mfu": real * useful / dt / peak if peak else 0.0,
                   "mfu_padded": flops / dt / peak if peak else 0.0, "peak_flops": peak, "source": source,
                   **{t: m[t] for t in LOSS_TERMS if t in m}}
            writer.write(row)
            bar.set_postfix(loss=f"{row['loss']:.4f}", acc=f"{row['in_batch_accuracy']:.3f}")
            if lead:
                bar.write(f"step {step}: loss {row['loss']:.4f} acc {row['in_batch_accuracy']:.3f} "
                          f"lr {row['learning_rate']:.2e} |g| {row['grad_norm']:.3f} "
                          f"{row['examples_per_sec']:.1f} ex/s mfu {row['mfu']:.3f} [{row['source']}]")
            t_last, n_since, real_since = time.perf_counter(), 0, 0
        preempted = ckpt.preempted(step)
        if ckpt.should_save(step) or step == c.train.steps or preempted:
            ckpt.save(step, state, data.state(batches), force=step == c.train.steps or preempted)
        if preempted and step < c.train.steps:
            preempted_at = step
            break
    ckpt.close()
    writer.close()
    summary = {"steps": c.train.steps, "resumed_from": start, "gflop_per_step": flops / 1e9,
               "memory_bytes": memory, "train_step_program": setup.fingerprint(lowered)}
    if preempted_at is not None:
        bar.close()
        log.warning("preempted (SIGTERM): saved step %d to %s; rerun the same command to resume", preempted_at,
                    ckpt.directory)
        return {**summary, "preempted_at": preempted_at}
    if c.eval.tasks and lead and jax.process_count() == 1:
        after = evaluate_params(pretrained, jax.device_get(state.model_params), c.eval.tasks)
        summary["eval"] = {"before": before, "after": after}
        print(before_after_table(before, after), flush=True)
        (workdir / "eval.json").write_text(json.dumps(summary["eval"], indent=1, default=float))
    if lead:
        last = writer.last or {}
        print(f"done: {c.train.steps} steps in {workdir} (checkpoints {ckpt.directory}, latest step {c.train.steps}; "
              f"metrics {workdir / 'metrics.jsonl'}); final loss {last.get('loss', float('nan')):.4f}, "
              f"in-batch accuracy {last.get('in_batch_accuracy', float('nan')):.3f}. Use it: "
              f"evaluate --model {workdir}, export --model {workdir}", flush=True)
    return summary


def before_after_table(before: dict | None, after: dict) -> str:
    lines = ["| task | metric | before | after |", "|---|---|---|---|"]
    for name, r in after.items():
        b = f"{before[name]['main_score']:.4f}" if before and name in before else "-"
        lines.append(f"| {name} | {r['metric']} | {b} | {r['main_score']:.4f} |")
    return "\n".join(lines)
