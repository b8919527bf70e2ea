"""Parallel training pairs per Tatoeba language, against the parallel data README's table of
priority languages and against line counts of the files themselves."""
import os
import pathlib

from gemini_embed.data import languages

DATA = pathlib.Path(os.environ["GEMINI_EMBED_DATA"])


def test_every_tatoeba_language_is_mapped():
    tatoeba = {f.name.split(".")[1].split("-")[0] for f in (DATA / "tatoeba").glob("tatoeba.*-eng.eng")}
    assert len(tatoeba) == 112 and set(languages.TATOEBA_ALIASES) == tatoeba


def test_pairs_match_the_readme_table():
    pairs = languages.pairs_per_tatoeba_language(DATA / "parallel")
    # The README's "Priority languages" rows (pairs per dataset).
    assert pairs["mkd"] == {"mediawiki_core_i18n": 2474, "mozilla_org_l10n": 74, "osm_id_editor_i18n": 709,
                            "osm_website_i18n": 1101, "rosetta_balcanica_train": 7085, "udhr": 62,
                            "wikipedia_android_strings": 1050}
    assert pairs["sqi"] == {"mediawiki_core_i18n": 1896, "mozilla_org_l10n": 1771, "osm_id_editor_i18n": 140,
                            "osm_website_i18n": 442, "rosetta_balcanica_train": 6973, "udhr": 53}
    assert pairs["swh"] == {"bible_corpus_nt": 7850, "mafand_mt_train": 29996, "mediawiki_core_i18n": 1310,
                            "udhr": 62}
    assert pairs["amh"] == {"bible_corpus_nt": 7649, "mediawiki_core_i18n": 891, "mozilla_org_l10n": 623, "udhr": 51}
    assert len(pairs) == 106 and "tzl" not in pairs  # six Tatoeba languages have no training pair
    # The counts.json figures are the files' own line counts (header excluded).
    for path in (DATA / "parallel/bible_corpus_nt/amh-en.tsv.gz", DATA / "parallel/udhr/mk-en.tsv.gz"):
        assert languages.file_pairs(path) == {"amh": 7649, "mk": 62}[path.name.split("-")[0]]


def test_codes_map_by_their_base():
    assert languages.tatoeba_language("sr-ec") == "srp" and languages.tatoeba_language("zh-Hant") == "cmn"
    assert languages.tatoeba_language("pt-BR") == "por" and languages.tatoeba_language("swa") == "swh"
    assert languages.tatoeba_language("acu") is None  # Achuar: not a Tatoeba language
