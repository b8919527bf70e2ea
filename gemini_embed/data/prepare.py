"""Prepare training datasets into tfds array_record builders (training does this on first use too).

    python -m gemini_embed.data.prepare scifact stsb-train path/to/mined.jsonl [--dir DIR] [--on_error fail]
    python -m gemini_embed.data.prepare --all       # every dataset of the shared data
    python -m gemini_embed.data.prepare --list      # registered names and their splits

A name is a registered dataset (all its splits), a `<dataset>-<split>` source name, or a user file
`[FORMAT:]PATH` (see docs/data.md). Each dataset's counts (examples per split, skipped bad input
per reason and file) are printed when it is prepared; bad input is skipped and counted unless
`--on_error fail`, which stops at the first bad line, naming file and line.
"""
from __future__ import annotations

import argparse
import logging
import sys

from gemini_embed.data import builders, sources, store


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="datasets, source names or files")
    ap.add_argument("--all", action="store_true", help="every registered dataset")
    ap.add_argument("--list", action="store_true", help="list the registered datasets and exit")
    ap.add_argument("--dir", default=None, help="prepared-data directory (default $GEMINI_EMBED_TFDS or "
                                                "~/.cache/gemini_embed/tfds)")
    ap.add_argument("--root", default=None, help="raw data (default $GEMINI_EMBED_DATA or ../shared/data)")
    ap.add_argument("--on_error", choices=("skip", "fail"), default="skip")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    reg = builders.registry(args.root)
    if args.list:
        for name, spec in reg.items():
            print(f"{name:28s} {', '.join(f'{name}-{s}' for s in spec.readers):70s} {spec.description}")
        return 0
    names = list(reg) if args.all else args.names
    if not names:
        ap.error("name at least one dataset, or --all")
    specs = [reg[n] if n in reg else builders.resolve_source(n, args.root)[0] for n in names]
    reports = []
    for spec in {s.name: s for s in specs}.values():
        try:
            reports.append(store.prepare(spec, args.dir, on_error=args.on_error))
        except sources.DataError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    print(f"\n{'dataset':28s} {'examples per split':48s} skipped")
    for r in reports:
        splits = ", ".join(f"{s} {c.get('examples', 0):,}" for s, c in r["splits"].items())
        print(f"{r['dataset']:28s} {splits:48s} {sum(r['skipped'].values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
