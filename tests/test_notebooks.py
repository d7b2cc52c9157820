"""The notebooks never rot: each runs top to bottom (with tiny trainings,
MNIST_TEN_NOTEBOOK_SMOKE=1), and each is stored without outputs."""
import json
import os
import pathlib
import re

import pytest

from tests.conftest import ROOT, SHARED

NOTEBOOKS = ROOT / "experiments" / "notebooks"
EXECUTED = ["data_walkthrough", "baselines", "train_and_inspect"]


def _mnist_env():
  env = {"MNIST_TEN_NOTEBOOK_SMOKE": "1"}
  tfds = os.environ.get("TFDS_DATA_DIR")
  if not (tfds and pathlib.Path(tfds, "mnist").exists()):
    if not (SHARED / "data" / "mnist").exists():
      pytest.skip("no MNIST here: set TFDS_DATA_DIR or provide ../shared/data/mnist")
    env["MNIST_TEN_NOTEBOOK_IDX_DIR"] = str(SHARED / "data" / "mnist")
  return env


@pytest.mark.parametrize("name", EXECUTED)
def test_notebook_runs_top_to_bottom(name, tmp_path, monkeypatch):
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  for key, value in _mnist_env().items():
    monkeypatch.setenv(key, value)
  monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebooks' workdirs
  nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
  client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                   resources={"metadata": {"path": str(NOTEBOOKS)}})
  client.execute()  # raises CellExecutionError, with the cell and traceback, on any failure
  errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if o.get("output_type") == "error"]
  assert not errors


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs_and_its_code_compiles(path):
  nb = json.loads(path.read_text())
  assert nb["nbformat"] == 4
  for cell in nb["cells"]:
    if cell["cell_type"] != "code":
      continue
    assert cell.get("outputs", []) == [] and cell.get("execution_count") is None
    # Shell (!) and magic (%) lines are Colab's; the rest must be Python.
    source = "".join(cell["source"])
    python = "\n".join("" if line.lstrip().startswith(("!", "%")) else line
                       for line in source.splitlines())
    compile(python, f"{path.name} cell", "exec")
    # Every config a command names exists.
    for config in re.findall(r"configs/(\w+)\.py", source):
      assert (ROOT / "configs" / f"{config}.py").exists(), config
