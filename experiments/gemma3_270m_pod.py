"""Gemma 3 270M embedding training sized for v5e-256 (16x16): mesh data=2 x fsdp (d_model 640 splits 128 ways at most).

    python -m gemini_embed.main --config experiments/gemma3_270m_pod.py --workdir DIR --compile_only --topology v5e:16x16
    python -m gemini_embed.main --config experiments/gemma3_270m_pod.py:finetune --workdir DIR --compile_only --topology v5e:16x16

See experiments/pod.py for the recipe and docs/scaling.md for what it costs per chip.
"""

from experiments import pod


def get_config(stage: str = "prefinetune"):
    return pod.pod_config("gemma3-270m", stage or "prefinetune", lr=5e-5, data=2, chunk=2048,
                          slice_name="v5e:16x16")
