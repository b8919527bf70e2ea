"""Shared fixtures: data prepared once per test session into a temporary tfds directory, and the
real Gemma 3 tokenizer."""
import pytest

from gemini_embed.data import pipeline


@pytest.fixture(scope="session")
def prepared_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="session")
def quick_sources(prepared_dir):
    """The quickstart's sources plus one with hard negatives, prepared and opened."""
    from data_helpers import NAMES

    return pipeline.open_sources(NAMES, data_dir=prepared_dir, verbose=False)


@pytest.fixture(scope="session")
def tokenizer():
    from gemini_embed.tokenize import GemmaTokenizer
    from gemini_embed.weights import packaged

    return GemmaTokenizer.from_gguf(packaged.gemma3_270m_gguf())
