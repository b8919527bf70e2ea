"""The LLM's data work: Gemma 3 in causal mode scoring (and, later, writing) training data."""
