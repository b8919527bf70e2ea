"""The LLM's data work: Gemma 3 in causal mode scoring (and, later, writing) training data, and
hard-negative mining (first-stage retrieval, rank window, LLM rescoring fused by RRF)."""
