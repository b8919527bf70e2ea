"""Prompts and tokenizers: Gemma 3 (SentencePiece, built offline from GGUF metadata) and BERT.

Both tokenizers share one small protocol: ``encode(texts, max_length)`` returns an
``Encoded(ids, truncated)`` pair, where ``ids[i]`` is ``[BOS/CLS] + text ids + [EOS/SEP]`` and is
at most ``max_length`` long, and ``truncated[i]`` says whether text ``i`` lost tokens to fit.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import tempfile
from collections.abc import Sequence
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

from gemini_embed.weights.gguf_file import read_gguf_metadata

# --------------------------------------------------------------------------------------------
# Prompts (Gemini Embedding / EmbeddingGemma style)
# --------------------------------------------------------------------------------------------

QUERY_TASKS: tuple[str, ...] = (
    "search result",
    "question answering",
    "fact checking",
    "classification",
    "clustering",
    "sentence similarity",
    "code retrieval",
    "summarization",
)
DOCUMENT_TASK = "document"


def _check_texts(texts: Sequence[object], name: str = "texts") -> None:
    # A bare str is a Sequence[str] too: without this, "hello" would silently become 5 texts.
    if isinstance(texts, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of str, not a single {type(texts).__name__}")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{name}[{i}] is {type(t).__name__}, expected str")


def apply_prompt(
    texts: Sequence[str], task: str | None, titles: Sequence[str | None] | None = None
) -> list[str]:
    """Format texts with the task prompt the model was trained with.

    - ``task=None``: texts unchanged; a non-None title is prepended as ``(title + " " + text).strip()``.
    - ``task="document"``: ``"title: {title or 'none'} | text: {text}"``.
    - ``task`` in ``QUERY_TASKS``: ``"task: {task} | query: {text}"``; titles are not allowed
      (a query has no title, and silently dropping them would hide a caller bug).
    """
    _check_texts(texts)
    if titles is not None:
        if isinstance(titles, (str, bytes)):
            raise TypeError("titles must be a sequence of str | None, not a single str")
        if len(titles) != len(texts):
            raise ValueError(f"titles has {len(titles)} items but texts has {len(texts)}")
        for i, t in enumerate(titles):
            if t is not None and not isinstance(t, str):
                raise TypeError(f"titles[{i}] is {type(t).__name__}, expected str or None")
    if task is None:
        if titles is None:
            return list(texts)
        return [text if title is None else (title + " " + text).strip() for text, title in zip(texts, titles)]
    if task == DOCUMENT_TASK:
        titles = titles if titles is not None else [None] * len(texts)
        return [f"title: {title or 'none'} | text: {text}" for text, title in zip(texts, titles)]
    if task in QUERY_TASKS:
        if titles is not None:
            raise ValueError(f"titles are only used with task={DOCUMENT_TASK!r} or task=None, not {task!r}")
        return [f"task: {task} | query: {text}" for text in texts]
    valid = ", ".join(repr(t) for t in (None, DOCUMENT_TASK, *QUERY_TASKS))
    raise ValueError(f"unknown task {task!r}; valid tasks: {valid}")


# --------------------------------------------------------------------------------------------
# Shared protocol
# --------------------------------------------------------------------------------------------


class Encoded(NamedTuple):
    """Token ids per text (special tokens included) and whether each text was truncated."""

    ids: list[list[int]]
    truncated: list[bool]


@runtime_checkable
class Tokenizer(Protocol):
    pad_id: int
    bos_id: int  # [CLS] for BERT
    eos_id: int  # [SEP] for BERT
    vocab_size: int

    def encode(self, texts: Sequence[str], max_length: int) -> Encoded: ...


def _check_max_length(max_length: int) -> None:
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 2:
        raise ValueError(f"max_length must be an int >= 2 (room for the two special tokens), got {max_length!r}")


def _wrap(body: list[list[int]], bos: int, eos: int, max_length: int) -> Encoded:
    """``[bos] + body[:max_length - 2] + [eos]``: truncation keeps the end marker, which the
    models pool on or expect (Gemma's last-token / BERT's [SEP])."""
    n = max_length - 2
    return Encoded([[bos, *ids[:n], eos] for ids in body], [len(ids) > n for ids in body])


# --------------------------------------------------------------------------------------------
# Gemma 3: SentencePiece model rebuilt from GGUF metadata
# --------------------------------------------------------------------------------------------

# Bump when the way the ModelProto is built changes, so stale cached models are not reused.
_SPM_BUILD_VERSION = 1
_WS = "\u2581"  # SentencePiece's escaped space

def build_spm_model_proto(meta: dict[str, object]) -> bytes:
    """A serialised SentencePiece BPE ModelProto equivalent to Gemma's ``tokenizer.model``."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    tokens = list(meta["tokenizer.ggml.tokens"])  # type: ignore[call-overload]
    scores = np.asarray(meta["tokenizer.ggml.scores"], np.float32)
    types = np.asarray(meta["tokenizer.ggml.token_type"], np.int32)
    unk = int(meta["tokenizer.ggml.unknown_token_id"])  # type: ignore[call-overload]
    if meta.get("tokenizer.ggml.model") != "llama" or not len(tokens) == len(scores) == len(types):
        raise ValueError("GGUF metadata does not describe a SentencePiece (llama-type) vocabulary")

    proto = pb.ModelProto()
    for i, (piece, score, typ) in enumerate(zip(tokens, scores.tolist(), types.tolist())):
        # The GGUF converter wrote the whitespace-run pieces ("  ", "   ", ...) with raw spaces,
        # but SentencePiece matches them against escaped text, so they must use U+2581 again.
        piece = piece.replace(" ", _WS)
        # GGUF marks <unk> as CONTROL; SentencePiece needs exactly one UNKNOWN piece.
        # The GGUF token-type enum otherwise equals SentencePiece's (1 normal .. 6 byte).
        proto.pieces.add(piece=piece, score=score, type=pb.ModelProto.SentencePiece.UNKNOWN if i == unk else typ)
    if len({p.piece for p in proto.pieces}) != len(tokens):
        raise ValueError("respelling spaces as U+2581 produced duplicate pieces")

    ts = proto.trainer_spec
    ts.model_type = pb.TrainerSpec.BPE
    ts.vocab_size = len(tokens)
    ts.byte_fallback = True  # read at encode time: unseen characters become <0xNN> pieces
    for name in ("unk", "bos", "eos", "pad"):
        key = {"unk": "unknown", "pad": "padding"}.get(name, name)
        token_id = int(meta[f"tokenizer.ggml.{key}_token_id"])  # type: ignore[call-overload]
        setattr(ts, f"{name}_id", token_id)
        setattr(ts, f"{name}_piece", tokens[token_id])
    ns = proto.normalizer_spec
    ns.name = "identity"  # Gemma does no Unicode normalisation
    ns.add_dummy_prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", False))
    ns.remove_extra_whitespaces = False  # whitespace runs are real tokens (code, indentation)
    ns.escape_whitespaces = True
    return proto.SerializeToString()


def _cache_path(gguf: pathlib.Path, cache_dir: pathlib.Path) -> pathlib.Path:
    # Keyed on the file's identity and stat, so a cached load need not read the GGUF at all.
    st = gguf.stat()
    key = f"{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}|v{_SPM_BUILD_VERSION}"
    return cache_dir / f"{gguf.stem}.{hashlib.sha256(key.encode()).hexdigest()[:16]}.spm.model"


def _atomic_write(path: pathlib.Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the cache should read like any other file
        os.replace(tmp, path)  # readers see either no file or the whole file
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


class GemmaTokenizer:
    """Gemma 3 SentencePiece tokenizer. ``encode`` gives ``[<bos>] + ids + [<eos>]``.

    Literal special-token text such as ``"<eos>"`` or ``"<start_of_turn>"`` in the input is
    tokenized as plain text (SentencePiece never parses CONTROL pieces from text), so user text
    cannot inject control tokens. HF's GGUF tokenizer differs here: it maps such text to the ids.
    """

    def __init__(self, model_proto: bytes) -> None:
        import sentencepiece as spm

        self.model_proto = model_proto  # the SentencePiece model, as `tokenizer.model` holds it
        self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self.pad_id: int = self._sp.pad_id()
        self.bos_id: int = self._sp.bos_id()
        self.eos_id: int = self._sp.eos_id()
        self.unk_id: int = self._sp.unk_id()
        self.vocab_size: int = self._sp.get_piece_size()

    @classmethod
    def from_file(cls, spm_model_path: str | os.PathLike[str]) -> GemmaTokenizer:
        """Load a serialised SentencePiece model (e.g. Gemma's ``tokenizer.model``)."""
        return cls(pathlib.Path(spm_model_path).read_bytes())

    @classmethod
    def from_gguf(
        cls, path: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None
    ) -> GemmaTokenizer:
        """Build from a GGUF's tokenizer metadata; the built model is cached in ``cache_dir``
        (default ``gemini_embed.runtime.CACHE_DIR/tokenizers``) for fast later loads."""
        gguf = pathlib.Path(path)
        if cache_dir is None:
            from gemini_embed.runtime import CACHE_DIR

            cache_dir = CACHE_DIR / "tokenizers"
        cached = _cache_path(gguf, pathlib.Path(cache_dir))
        if cached.exists():
            return cls.from_file(cached)
        proto = build_spm_model_proto(read_gguf_metadata(gguf))
        try:
            _atomic_write(cached, proto)
        except OSError:
            pass  # a read-only cache only costs speed, never correctness
        return cls(proto)

    def encode(self, texts: Sequence[str], max_length: int) -> Encoded:
        """``Encoded(ids, truncated)``; each ``ids[i]`` is ``[bos] + text ids + [eos]``, with the
        text ids cut from the right so that ``len(ids[i]) <= max_length``."""
        _check_texts(texts)
        _check_max_length(max_length)
        body = self._sp.encode(list(texts), out_type=int) if len(texts) else []
        return _wrap(body, self.bos_id, self.eos_id, max_length)

    def decode(self, ids: Sequence[int]) -> str:
        return self._sp.decode(list(ids))

    def save(self, folder: str | os.PathLike[str], max_length: int) -> None:
        """The Hugging Face files (``tokenizer.model``, ``tokenizer_config.json``) that tokenize as
        ``encode`` does: BOS + text + EOS (EmbeddingGemma's setting)."""
        folder = pathlib.Path(folder)
        (folder / "tokenizer.model").write_bytes(self.model_proto)
        _write_config(folder, {"tokenizer_class": "GemmaTokenizer", "add_bos_token": True, "add_eos_token": True,
                               "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>",
                               "unk_token": "<unk>", "padding_side": "right", "model_max_length": max_length})


# --------------------------------------------------------------------------------------------
# BERT WordPiece (all-MiniLM-L6-v2) via the `tokenizers` library
# --------------------------------------------------------------------------------------------


class BertTokenizer:
    """WordPiece tokenizer from a ``tokenizer.json``; ``encode`` gives ``[CLS] + ids + [SEP]``,
    the same ids as sentence-transformers (which truncates ``longest_first`` to ``max_seq_length``,
    256 for all-MiniLM-L6-v2, special tokens included)."""

    def __init__(self, tokenizer_json: str | os.PathLike[str]) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        tok = HFTokenizer.from_file(str(tokenizer_json))
        pad = tok.padding["pad_id"] if tok.padding else tok.token_to_id("[PAD]")
        # The file ships fixed 128-token padding/truncation; we cut and pad ourselves, per call.
        tok.no_truncation()
        tok.no_padding()
        ids = {name: tok.token_to_id(name) for name in ("[CLS]", "[SEP]")}
        if pad is None or None in ids.values():
            raise ValueError(f"{tokenizer_json} lacks [CLS]/[SEP]/[PAD]; not a BERT tokenizer")
        self._tok = tok
        self.pad_id: int = int(pad)
        self.bos_id: int = ids["[CLS]"]
        self.eos_id: int = ids["[SEP]"]
        self.vocab_size: int = tok.get_vocab_size(with_added_tokens=True)

    @classmethod
    def from_dir(cls, model_dir: str | os.PathLike[str]) -> BertTokenizer:
        return cls(pathlib.Path(model_dir) / "tokenizer.json")

    def encode(self, texts: Sequence[str], max_length: int) -> Encoded:
        """``Encoded(ids, truncated)``; each ``ids[i]`` is ``[CLS] + text ids + [SEP]``, with the
        text ids cut from the right so that ``len(ids[i]) <= max_length``."""
        _check_texts(texts)
        _check_max_length(max_length)
        # Special tokens are added by `_wrap`, not the post-processor: one truncation rule for
        # both tokenizers, and no per-call mutation of the shared Rust tokenizer's settings.
        # `encode_batch_fast` skips character offsets, which we never use (~30% faster).
        encs = self._tok.encode_batch_fast(list(texts), add_special_tokens=False) if len(texts) else []
        return _wrap([e.ids for e in encs], self.bos_id, self.eos_id, max_length)

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids))

    def save(self, folder: str | os.PathLike[str], max_length: int) -> None:
        """``tokenizer.json`` (its post-processor adds [CLS]/[SEP]) and ``tokenizer_config.json``."""
        folder = pathlib.Path(folder)
        self._tok.save(str(folder / "tokenizer.json"))
        _write_config(folder, {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "cls_token": "[CLS]",
                               "sep_token": "[SEP]", "pad_token": "[PAD]", "mask_token": "[MASK]",
                               "unk_token": "[UNK]", "model_max_length": max_length})


def _write_config(folder: pathlib.Path, config: dict) -> None:
    import json

    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
