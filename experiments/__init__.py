"""Experiment configs (`get_config()` files for `--config`). A package, installed with the
library (pyproject), so configs build on each other with plain imports (`from experiments import
tiny`) from any working directory."""
