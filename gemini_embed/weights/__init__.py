"""Weight importers (GGUF, Hugging Face safetensors) and the paths of packaged weights."""
from gemini_embed.weights import packaged  # noqa: F401
