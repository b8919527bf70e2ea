"""Training data: readers of every format (sources), tfds array_record builders and the dataset
registry (builders), the grain pipeline (pipeline), `python -m gemini_embed.data.prepare`, and
hard-negative mining (mining). See docs/data.md."""
