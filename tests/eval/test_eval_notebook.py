"""docs/notebooks/evaluate.ipynb runs headless from top to bottom, so it never rots."""
import pathlib

import pytest
from reference_libs import require

nbclient = require("nbclient")
nbformat = require("nbformat")

NOTEBOOK = pathlib.Path(__file__).resolve().parents[2] / "docs" / "notebooks" / "evaluate.ipynb"


def test_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code), \
        f"{NOTEBOOK.name}: strip outputs before committing (jupyter nbconvert --clear-output)"


@pytest.mark.slow
def test_notebook_executes():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2  # the MRL curve and the heatmap
    tables = [o for o in outputs if "text/html" in o.get("data", {})]
    assert tables and "STS17:en-en" in tables[0]["data"]["text/html"]
