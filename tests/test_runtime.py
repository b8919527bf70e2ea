"""The commands' shared set-up (gemini_embed/runtime.py): one help style, every option explained."""
import argparse

import pytest

from gemini_embed import evaluate, mine, recipe, runtime, soup


@pytest.mark.parametrize("command", [evaluate, mine, soup, recipe], ids=lambda m: m.__name__)
def test_every_option_has_help_and_shows_its_default(command, monkeypatch):
    parsers = []

    def capture(self, args=None, namespace=None):
        parsers.append(self)
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    with pytest.raises(SystemExit):
        command.main([])
    (parser,) = parsers
    assert parser.formatter_class is runtime.HelpFormatter
    assert [a.option_strings for a in parser._actions if not a.help] == []
    text = parser.format_help()
    for action in parser._actions:
        if action.default not in (None, False, argparse.SUPPRESS) and not action.required:
            assert f"(default: {action.default})" in " ".join(text.split()) or "%(default)" in action.help
