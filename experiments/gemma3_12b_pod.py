"""Gemma 3 12B embedding training sized for v5p-128 (4x4x8): mesh fsdp over every chip.

    python -m gemini_embed.main --config experiments/gemma3_12b_pod.py --workdir DIR --compile_only --topology v5p:4x4x8
    python -m gemini_embed.main --config experiments/gemma3_12b_pod.py:finetune --workdir DIR --compile_only --topology v5p:4x4x8

See experiments/pod.py for the recipe and docs/scaling.md for what it costs per chip.
"""

from experiments import pod


def get_config(stage: str = "prefinetune"):
    return pod.pod_config("gemma3-12b", stage or "prefinetune", lr=1e-5, data=1, chunk=1024,
                          slice_name="v5p:4x4x8")
