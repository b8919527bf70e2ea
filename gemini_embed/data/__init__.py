"""Training data: readers of every format (sources), the dataset registry (builders), the tfds
array_record store they are prepared into (store), the grain pipeline (pipeline) and
`python -m gemini_embed.data.prepare`. It imports no model: hard-negative mining lives in
gemini_embed/llm/. See docs/data.md."""
