"""The LLM as a scorer of training data: Gemma 3 in causal mode gives log p(query | passage).

Used by hard-negative mining (llm/mining.py) to veto likely false negatives; the same causal
model is the base of the LLM's other data work (generation, filtering).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

STEP = 16  # sequence lengths are rounded up to a multiple of this: a few compiled shapes, little padding


class QueryLikelihoodScorer:
    """Gemma 3 in causal mode scores `sum log p(query tokens | "Passage: {title} {text}\\nQuery:")`.

    Only the query's tokens are scored. Pairs run in fixed (rows, length, query length) buckets so
    the number of compilations stays small; only the hidden states that predict query tokens go
    through the 262k-word output layer (the full [B, L, V] logits would not fit a CPU's memory).
    """

    def __init__(self, gguf_path=None, *, max_passage_tokens: int = 128, max_query_tokens: int = 64,
                 batch_size: int = 8, name: str = "gemma3-270m"):
        import jax

        from gemini_embed.llm.decoding import load_causal_gemma
        from gemini_embed.model.gemma3 import Gemma3

        if max_passage_tokens < 1 or max_query_tokens < 1 or batch_size < 1:
            raise ValueError(f"max_passage_tokens={max_passage_tokens}, max_query_tokens={max_query_tokens} and "
                             f"batch_size={batch_size} must all be >= 1")
        config, params, self.tokenizer = load_causal_gemma(gguf_path, "LLM scorer")
        self.name = name
        self.config = dict(name=name, max_passage_tokens=max_passage_tokens, max_query_tokens=max_query_tokens)
        self.max_passage_tokens, self.max_query_tokens, self.batch_size = max_passage_tokens, max_query_tokens, batch_size
        self.model = Gemma3(config)
        self.params = jax.device_put(params)
        self._tail = self._encode(["\nQuery:"])[0]
        self._fn = jax.jit(self._loglik)
        self.shapes_seen: set[tuple[int, int, int]] = set()

    def _encode(self, texts: list[str]) -> list[list[int]]:
        # encode() wraps in [bos] .. [eos]; the pieces here are joined by hand, so strip both.
        ids, _ = self.tokenizer.encode(texts, 1 << 30)
        return [x[1:-1] for x in ids]

    def _loglik(self, params, tokens, mask, pos, targets, valid):
        """tokens, mask [B, L]; pos, targets, valid [B, Lq] -> sum of log p(target | prefix) [B]."""
        import jax
        import jax.numpy as jnp

        from gemini_embed.model.gemma3 import Gemma3

        hidden = self.model.apply(params, tokens, mask)  # [B, L, D]
        h = jnp.take_along_axis(hidden, pos[..., None], axis=1)  # [B, Lq, D]: states that predict the query
        logits = self.model.apply(params, h, method=Gemma3.logits)  # [B, Lq, V] float32
        picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
        logp = picked - jax.nn.logsumexp(logits, axis=-1)  # [B, Lq]
        return jnp.sum(jnp.where(valid, logp, 0.0), axis=-1)

    def pair_ids(self, queries: Sequence[str], passages: Sequence[tuple[str, str]]) -> list[tuple[list[int], int]]:
        """(token ids, number of query tokens at the end) per pair; the passage is cut to fit."""
        if len(queries) != len(passages):
            raise ValueError(f"got {len(queries)} queries for {len(passages)} passages")
        bodies = self._encode([" ".join(x for x in ("Passage:", title, text) if x) for title, text in passages])
        # The space goes with the query, as the tokenizer would split "Query: claim" as one string.
        qs = self._encode([" " + q for q in queries])
        bos = self.tokenizer.bos_id
        return [([bos, *b[:self.max_passage_tokens], *self._tail, *q[:self.max_query_tokens]],
                 len(q[:self.max_query_tokens])) for b, q in zip(bodies, qs)]

    def score(self, queries: Sequence[str], passages: Sequence[tuple[str, str]]) -> np.ndarray:
        """log p(query_i | passage_i) [N] float64, for passages given as (title, text)."""
        from gemini_embed.embed import length_buckets

        pairs = self.pair_ids(queries, passages)
        out = np.zeros(len(pairs), np.float64)
        if not pairs:
            return out
        q_buckets = length_buckets(self.max_query_tokens)
        order = sorted(range(len(pairs)), key=lambda i: -len(pairs[i][0]))  # similar lengths share a batch
        for s in range(0, len(order), self.batch_size):
            idx = order[s:s + self.batch_size]
            length = -(-len(pairs[idx[0]][0]) // STEP) * STEP  # causal rows can't skip padding: pad little
            lq = next(b for b in q_buckets if b >= max(pairs[i][1] for i in idx))
            rows = self.batch_size
            tokens = np.full((rows, length), self.tokenizer.pad_id, np.int32)
            mask = np.zeros((rows, length), bool)
            pos = np.zeros((rows, lq), np.int32)
            targets = np.zeros((rows, lq), np.int32)
            valid = np.zeros((rows, lq), bool)
            for r, i in enumerate(idx):
                ids, nq = pairs[i]
                tokens[r, :len(ids)], mask[r, :len(ids)] = ids, True
                start = len(ids) - nq  # first query token; position start - 1 predicts it
                pos[r, :nq] = np.arange(start - 1, start - 1 + nq)
                targets[r, :nq] = ids[start:]
                valid[r, :nq] = True
            mask[len(idx):, 0] = True  # padding rows see one token: no all-masked softmax
            self.shapes_seen.add((rows, length, lq))
            out[idx] = np.asarray(self._fn(self.params, tokens, mask, pos, targets, valid), np.float64)[:len(idx)]
        return out
