"""Gemma 3 1B embedding training sized for v5e-256 (16x16): mesh data=2 x fsdp (d_model 1152 splits 128 ways at most).

    python -m gemini_embed.main --config experiments/gemma3_1b_pod.py --workdir DIR --compile_only --topology v5e:16x16
    python -m gemini_embed.main --config experiments/gemma3_1b_pod.py:finetune --workdir DIR --compile_only --topology v5e:16x16

See experiments/pod.py for the recipe and docs/scaling.md for what it costs per chip.
"""

from experiments import pod


def get_config(stage: str = "prefinetune"):
    return pod.pod_config("gemma3-1b", stage or "prefinetune", lr=3e-5, data=2, chunk=1024,
                          slice_name="v5e:16x16")
