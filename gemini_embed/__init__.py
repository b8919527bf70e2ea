"""gemini_embed: Gemini-Embedding-style text and code embedding models in JAX/Flax."""
from gemini_embed import runtime

runtime.default_platforms()  # the Python API too: no libtpu start-up errors on a machine without TPUs

from gemini_embed import losses, quantize, weights  # noqa: F401
from gemini_embed.embed import Embedder
from gemini_embed.eval.search import semantic_search
from gemini_embed.model.embedding_model import EmbeddingModel, EmbeddingModelConfig
from gemini_embed.model.gemma3 import GEMMA3_PRESETS, Gemma3, Gemma3Config
from gemini_embed.tokenize import QUERY_TASKS, apply_prompt

__all__ = ["Embedder", "EmbeddingModel", "EmbeddingModelConfig", "Gemma3", "Gemma3Config", "GEMMA3_PRESETS",
           "QUERY_TASKS", "apply_prompt", "quantize", "semantic_search"]
