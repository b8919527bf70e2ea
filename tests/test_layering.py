"""The package's seams, read from the source (ast, nothing imported): the input pipeline (data/)
imports no model code, and the registry (pretrained.py) does not import the Embedder it serves."""
from __future__ import annotations

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "gemini_embed"
MODEL_CODE = ("gemini_embed.model", "gemini_embed.weights", "gemini_embed.embed", "gemini_embed.pretrained",
              "gemini_embed.llm", "gemini_embed.train", "gemini_embed.eval")


def imported_modules(path: pathlib.Path) -> set[str]:
    """Every module an import statement in `path` names, at any depth (also inside functions)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_the_input_pipeline_imports_no_model():
    found = {f"{p.name}: {m}" for p in sorted((PACKAGE / "data").glob("*.py")) for m in imported_modules(p)
             if m.startswith(MODEL_CODE)}
    assert not found


def test_the_registry_does_not_import_the_embedder():
    assert not {m for m in imported_modules(PACKAGE / "pretrained.py") if m.startswith("gemini_embed.embed")}


def test_the_check_sees_an_import_inside_a_function(tmp_path):
    (tmp_path / "m.py").write_text("def f():\n    from gemini_embed.model import gemma3\n")
    assert "gemini_embed.model.gemma3" in imported_modules(tmp_path / "m.py")
