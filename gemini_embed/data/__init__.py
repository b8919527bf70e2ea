"""Training data: readers of every format (sources), tfds array_record builders and the dataset
registry (builders), the grain pipeline (pipeline) and `python -m gemini_embed.data.prepare`. It
imports no model: hard-negative mining lives in gemini_embed/llm/. See docs/data.md."""
