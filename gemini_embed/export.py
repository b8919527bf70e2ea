"""Export a model to a sentence-transformers folder (safetensors only), EmbeddingGemma's layout:

    python -m gemini_embed.export --model runs/recipe/soup_uniform --output exported/
    SentenceTransformer("exported/").encode(texts, prompt_name="search result", truncate_dim=256)

  modules.json                      Transformer -> Pooling (mean) -> Dense x N -> Normalize
  config.json, model.safetensors    the encoder: Gemma3TextModel (bidirectional) or BertModel
  tokenizer files                   Gemma: tokenizer.model (SentencePiece), BOS + text + EOS
  sentence_bert_config.json         max_seq_length
  config_sentence_transformers.json the task prompts (`prompt_name=` a task, as `embed(task=)`)
  1_Pooling/config.json             mean over every token, prompt included
  2_Dense/, 3_Dense/ ...            the projection layers (bias-free, identity activation)
  N_Normalize/

MRL: `truncate_dim` (sentence-transformers truncates, then `normalize_embeddings=True` rescales).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import shutil

import numpy as np

from gemini_embed import runtime
from gemini_embed.model.gemma3 import Gemma3Config
from gemini_embed.pretrained import Pretrained, resolve
from gemini_embed.tokenize import DOCUMENT_TASK, QUERY_TASKS, apply_prompt

ST = "sentence_transformers.models."


def _write_json(path: pathlib.Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")


def _save_tensors(path: pathlib.Path, tensors: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()}, str(path))


def _prompts() -> dict[str, str]:
    """Each query task's prompt prefix, and the document prefix with no title."""
    prompts = {t: apply_prompt([""], task=t)[0] for t in QUERY_TASKS}
    prompts[DOCUMENT_TASK] = apply_prompt([""], task=DOCUMENT_TASK)[0]
    return prompts


def _encoder_files(p: Pretrained, out: pathlib.Path) -> None:
    """config.json, model.safetensors and the tokenizer files of the Transformer module."""
    enc, params = p.config.encoder, p.params["params"]["encoder"]
    if isinstance(enc, Gemma3Config):
        from gemini_embed.weights import gemma3_import

        _write_json(out / "config.json", gemma3_import.hf_config(enc, p.max_length))
        _save_tensors(out / "model.safetensors", gemma3_import.hf_tensors(enc, params))
    else:
        from gemini_embed.weights import bert_safetensors

        _write_json(out / "config.json", bert_safetensors.hf_config(enc))
        _save_tensors(out / "model.safetensors", bert_safetensors.hf_tensors(enc, params))
    p.tokenizer.save(out, p.max_length)


def export_sentence_transformers(model: str, output, *, overwrite: bool = False) -> pathlib.Path:
    """Writes `model` (a registered name, workdir, export or folder) as a sentence-transformers folder."""
    out = pathlib.Path(output)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty (pass --overwrite to replace it)")
        shutil.rmtree(out)
    p = resolve(model)
    d = p.config.encoder.d_model
    _encoder_files(p, out)
    _write_json(out / "sentence_bert_config.json", {"max_seq_length": p.max_length, "do_lower_case": False})
    _write_json(out / "1_Pooling" / "config.json", {
        "word_embedding_dimension": d, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False, "pooling_mode_lasttoken": False, "include_prompt": True})
    modules = [("", "Transformer"), ("1_Pooling", "Pooling")]
    features = d
    for i, width in enumerate(p.config.projection):
        folder = f"{len(modules)}_Dense"
        kernel = np.asarray(p.params["params"]["projection"][f"dense_{i}"]["kernel"])  # [in, out]
        _write_json(out / folder / "config.json", {"in_features": features, "out_features": width, "bias": False,
                                                   "activation_function": "torch.nn.modules.linear.Identity"})
        _save_tensors(out / folder / "model.safetensors", {"linear.weight": kernel.T})
        modules.append((folder, "Dense"))
        features = width
    modules.append((f"{len(modules)}_Normalize", "Normalize"))
    (out / modules[-1][0]).mkdir(parents=True, exist_ok=True)
    _write_json(out / "modules.json", [{"idx": i, "name": str(i), "path": path, "type": ST + kind}
                                       for i, (path, kind) in enumerate(modules)])
    _write_json(out / "config_sentence_transformers.json", {
        "model_type": "SentenceTransformer", "prompts": _prompts() if p.uses_prompts else {},
        "default_prompt_name": None, "similarity_fn_name": "cosine",
        "gemini_embed": {"source": model, "mrl_dims": list(p.config.mrl_dims), "provenance": p.provenance}})
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=runtime.HelpFormatter)
    ap.add_argument("--model", required=True, help="a registered name, a workdir, an export or a model folder")
    ap.add_argument("--output", required=True, help="the sentence-transformers folder to write")
    ap.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    args = ap.parse_args(argv)
    runtime.setup_command()
    try:
        out = export_sentence_transformers(args.model, args.output, overwrite=args.overwrite)
    except (FileExistsError, FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    print(f"wrote {out} (load with sentence_transformers.SentenceTransformer({str(out)!r}))")


if __name__ == "__main__":
    main()
