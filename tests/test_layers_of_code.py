"""No module imports one above its layer (the brief's layering rule)."""
import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "mnist_ten"

# Lowest first: a module may import only modules of its own or a lower layer.
LAYERS = [
    {"errors", "registry", "phases"},
    {"config", "models", "layers", "losses", "optim", "parallel", "datasets", "splits",
     "augment", "neighbors", "checkpoint", "metric_writer", "workdir",
     "shares", "folders"},
    {"graph", "input_pipeline", "tf_pipeline"},
    {"methods"},
    {"evaluate", "run"},
    {"inference"},
    {"plots", "ensemble", "propose"},
    {"train"},
    {"__init__"},
]


def _layer(name: str) -> int:
  return next(i for i, layer in enumerate(LAYERS) if name in layer)


def _imports(path: pathlib.Path):
  """The mnist_ten modules a file imports, wherever in the file."""
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mnist_ten"):
      parts = node.module.split(".")
      if len(parts) > 1:
        yield parts[1]
      else:
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.startswith("mnist_ten."):
          yield alias.name.split(".")[1]


def test_no_module_imports_one_above_its_layer():
  files = sorted(PACKAGE.glob("*.py")) + sorted((PACKAGE / "methods").glob("*.py"))
  bad = []
  for path in files:
    name = "methods" if path.parent.name == "methods" else path.stem
    for imported in _imports(path):
      if _layer(imported) > _layer(name):
        bad.append(f"{path.relative_to(PACKAGE.parent)} imports {imported}")
  assert not bad, bad
  # Every module has a layer (a new one must be placed here).
  assert {p.stem for p in PACKAGE.glob("*.py")} <= set().union(*LAYERS)
