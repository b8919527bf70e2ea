"""docs/notebooks/evaluate.ipynb is stored with its outputs and runs headless from top to bottom, so it never rots."""
import pathlib

import pytest
from reference_libs import require

nbclient = require("nbclient")
nbformat = require("nbformat")

NOTEBOOK = pathlib.Path(__file__).resolve().parents[2] / "docs" / "notebooks" / "evaluate.ipynb"


def _check_outputs(nb):
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count is not None for c in code), "a code cell was not run"
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2  # the MRL curve and the heatmap
    tables = [o for o in outputs if "text/html" in o.get("data", {})]
    assert tables and "STS17:en-en" in tables[0]["data"]["text/html"]


def test_committed_notebook_shows_its_outputs():
    """Stored executed (readable on GitHub without running it): re-run and save it after a change."""
    _check_outputs(nbformat.read(NOTEBOOK, as_version=4))


@pytest.mark.slow
def test_notebook_executes():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    _check_outputs(nb)
