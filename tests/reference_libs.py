"""Reference libraries of the parity tests (torch, transformers, sentence-transformers, mteb, ...).

Under CI=true a missing one is a failure, never a skip: a suite that passes without running its
references proves nothing. Elsewhere (a partial local install) the test is skipped with a reason.
"""
import importlib
import os

import pytest


def require(name: str):
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        return importlib.import_module(name)  # ImportError: the test (or its module) fails
    return pytest.importorskip(name)


class Lazy:
    """A module imported (via `require`) on first use, so that the tests of a file that do not
    need it run without it."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr):
        if attr.startswith("__"):  # pytest's collection probes module globals (__test__, ...)
            raise AttributeError(attr)
        return getattr(require(self._name), attr)
