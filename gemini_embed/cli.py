"""`gemini-embed COMMAND [ARGS]`: the console script in front of the `python -m` commands.

    gemini-embed train --config experiments/tiny.py --workdir runs/tiny
    gemini-embed evaluate --model all-minilm-l6-v2 --tasks STSBenchmark --output r.json
    gemini-embed COMMAND --help

Each command is the same program as `python -m gemini_embed.<module>`, with the same flags.
"""
from __future__ import annotations

import importlib
import runpy
import sys

COMMANDS = {  # command: (module, what it does)
    "train": ("gemini_embed.main", "train (or compile-only) from an experiment config; resumes in its workdir"),
    "evaluate": ("gemini_embed.evaluate", "MTEB-style evaluation of a model on registered or own tasks"),
    "mine": ("gemini_embed.mine", "hard negatives for a BEIR folder's train queries (optionally LLM-rescored), as training JSONL"),
    "synth": ("gemini_embed.synth", "training pairs written by the LLM: queries for passages, paraphrases of sentences"),
    "filter": ("gemini_embed.filter_pairs", "keep the synthetic pairs that pass dedup, LLM likelihood and round-trip tests"),
    "export": ("gemini_embed.export", "write a model as a sentence-transformers folder"),
    "soup": ("gemini_embed.soup", "average finetuned models (uniform, or greedy on dev tasks)"),
    "prepare": ("gemini_embed.data.prepare", "prepare training sources into tfds array_record stores (training does it on first use too)"),
    "recipe": ("gemini_embed.recipe", "run the staged recipe: pre-finetune, finetune, soup, evaluate"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items()]
    return "usage: gemini-embed COMMAND [ARGS]   (gemini-embed COMMAND --help for its flags)\n\ncommands:\n" + \
        "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        raise SystemExit(0 if argv else 2)
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        raise SystemExit(f"error: unknown command {name!r}\n{usage()}")
    sys.argv = [f"gemini-embed {name}", *rest]  # the program name in usage and errors
    if name == "train":  # an absl program: run as __main__, so its --help shows its doc and flags
        runpy.run_module(COMMANDS[name][0], run_name="__main__", alter_sys=True)
        return
    module = importlib.import_module(COMMANDS[name][0])
    result = module.main(rest)
    if isinstance(result, int) and not isinstance(result, bool):
        raise SystemExit(result)


if __name__ == "__main__":
    main()
