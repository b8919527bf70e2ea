"""Where a model came from: `provenance.json` next to its checkpoints (a workdir) or its params
(an export, a soup).

  {"model": name, "init_from": the workdir/export the params started from (or null: the named
   model's own weights), "parent": the provenance of init_from (a chain back to the raw LLM),
   "data": {"sources", "rates"}, "config": the whole run config, "code": {"commit", "dirty"},
   "created": UTC time}

A soup writes {"soup": {"method", "inputs", "kept", "dev": ...}, "parents": [...], ...} instead of
"init_from"/"parent". `from_pretrained` attaches it (`Embedder.provenance`); the evaluate command
prints it and stores it in results.json.
"""
from __future__ import annotations

import datetime
import json
import pathlib
import subprocess
from typing import Any

FILE = "provenance.json"


def code_version() -> dict:
    """The git commit of the code that ran, and whether its tree had uncommitted changes."""
    repo = pathlib.Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}  # an installed package, not a checkout
    return {"commit": commit, "dirty": dirty}


def read(path) -> dict | None:
    """The provenance of a workdir or export, or None where it has none."""
    f = pathlib.Path(path) / FILE
    return json.loads(f.read_text()) if f.is_file() else None


def write(directory, record: dict[str, Any]) -> pathlib.Path:
    """Writes `record` (plus code version and time) atomically to DIRECTORY/provenance.json."""
    directory = pathlib.Path(directory)
    record = {**record, "code": code_version(),
              "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    tmp = directory / (FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=1, default=str))
    tmp.replace(directory / FILE)
    return directory / FILE


def for_run(config: dict, init_from: str | None) -> dict:
    """The provenance record of a training run from its config dict."""
    data = config.get("data", {})
    return {"model": config.get("model", {}).get("name"), "init_from": init_from,
            "parent": read(init_from) if init_from else None,
            "data": {"sources": data.get("sources"), "rates": data.get("rates")}, "config": config}


def summary(record: dict | None) -> str:
    """One line per generation, newest first: what each model was trained on, from what."""
    lines = []
    while record:
        if "soup" in record:
            s = record["soup"]
            lines.append(f"{s['method']} soup of {len(s['kept'])} of {len(s['inputs'])}: {', '.join(s['kept'])}")
            break
        lines.append(f"trained from {record.get('init_from') or record.get('model')} on "
                     f"{record['data']['sources']} (rates {record['data']['rates'] or 'uniform'}), "
                     f"{record['config'].get('train', {}).get('steps')} steps, code {(record['code'] or {}).get('commit')}")
        record = record.get("parent")
    return "\n".join(lines)
