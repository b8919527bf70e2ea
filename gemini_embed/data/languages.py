"""Which training pairs of the parallel data (`../shared/data/parallel`) belong to each Tatoeba
language, for the multilingual report's "F1 against pairs seen" (docs/multilingual.md).

Tatoeba names its 112 languages by ISO 639-3 codes; the parallel datasets spell theirs as each
source does (MediaWiki codes, Android/BCP-47 tags, ISO 639-3 for the Bible and MAFAND). A file
`<code>-en.tsv.gz` counts for a Tatoeba language when the base of its code (before the first
`-`, lower-cased) is one of the language's aliases below.
"""
from __future__ import annotations

import gzip
import json
import pathlib

# Tatoeba code -> the base codes the parallel data uses for it (639-1, 639-3, macro / legacy codes).
TATOEBA_ALIASES: dict[str, tuple[str, ...]] = {
    "afr": ("af",), "amh": ("am",), "ang": (), "ara": ("ar",), "arq": (), "arz": (), "ast": (), "awa": (),
    "aze": ("az", "azb"), "bel": ("be",), "ben": ("bn",), "ber": ("tzm", "zgh", "shi", "rif"), "bos": ("bs",),
    "bre": ("br",), "bul": ("bg",), "cat": ("ca",), "cbk": (), "ceb": (), "ces": ("cs",), "cha": ("ch",),
    "cmn": ("zh",), "cor": ("kw",), "csb": (), "cym": ("cy",), "dan": ("da",), "deu": ("de",), "dsb": (),
    "dtp": (), "ell": ("el",), "epo": ("eo",), "est": ("et",), "eus": ("eu",), "fao": ("fo",), "fin": ("fi",),
    "fra": ("fr",), "fry": ("fy",), "gla": ("gd",), "gle": ("ga",), "glg": ("gl",), "gsw": ("als",),
    "heb": ("he", "iw"), "hin": ("hi",), "hrv": ("hr",), "hsb": (), "hun": ("hu",), "hye": ("hy",),
    "ido": ("io",), "ile": ("ie",), "ina": ("ia",), "ind": ("id", "in"), "isl": ("is",), "ita": ("it",),
    "jav": ("jv",), "jpn": ("ja",), "kab": (), "kat": ("ka",), "kaz": ("kk",), "khm": ("km",), "kor": ("ko",),
    "kur": ("ku", "kmr"), "kzj": (), "lat": ("la",), "lfn": (), "lit": ("lt",), "lvs": ("lv", "lav"),
    "mal": ("ml",), "mar": ("mr",), "max": (), "mhr": (), "mkd": ("mk",), "mon": ("mn",), "nds": (),
    "nld": ("nl",), "nno": ("nn",), "nob": ("nb", "no"), "nov": (), "oci": ("oc",), "orv": (), "pam": (),
    "pes": ("fa",), "pms": (), "pol": ("pl",), "por": ("pt",), "ron": ("ro", "mo"), "rus": ("ru",),
    "slk": ("sk",), "slv": ("sl",), "spa": ("es",), "sqi": ("sq",), "srp": ("sr",), "swe": ("sv",), "swg": (),
    "swh": ("sw", "swa"), "tam": ("ta",), "tat": ("tt",), "tel": ("te",), "tgl": ("tl", "fil"), "tha": ("th",),
    "tuk": ("tk",), "tur": ("tr",), "tzl": (), "uig": ("ug",), "ukr": ("uk",), "urd": ("ur",),
    "uzb": ("uz", "uzn"), "vie": ("vi",), "war": (), "wuu": (), "xho": ("xh",), "yid": ("yi", "ji"), "yue": (),
    "zsm": ("ms",),
}


def base_code(code: str) -> str:
    return code.split("-")[0].lower()


def tatoeba_language(code: str) -> str | None:
    """The Tatoeba language a parallel file's code belongs to, or None."""
    base = base_code(code)
    for lang, aliases in TATOEBA_ALIASES.items():
        if base == lang or base in aliases:
            return lang
    return None


def file_pairs(path: pathlib.Path) -> int:
    """Pairs in one `<code>-en.tsv.gz` (its lines less the header)."""
    with gzip.open(path, "rb") as f:
        return sum(1 for _ in f) - 1


def pairs_per_tatoeba_language(parallel_dir) -> dict[str, dict[str, int]]:
    """Tatoeba code -> {dataset folder: raw pairs} over every parallel file of that language (before
    tempering and placeholder removal); languages without any file are absent."""
    out: dict[str, dict[str, int]] = {}
    for folder in sorted(p for p in pathlib.Path(parallel_dir).iterdir() if p.is_dir()):
        counts_file = folder / "counts.json"
        counts = json.loads(counts_file.read_text()) if counts_file.exists() else {}
        for path in sorted(folder.glob("*-en.tsv.gz")):
            code = path.name.removesuffix("-en.tsv.gz")
            lang = tatoeba_language(code)
            if lang is None:
                continue
            known = counts.get(code)
            n = known.get("pairs") if isinstance(known, dict) else known
            per = out.setdefault(lang, {})
            per[folder.name] = per.get(folder.name, 0) + (int(n) if n is not None else file_pairs(path))
    return out
