"""Every finished run draws its figures; they are non-blank, and the
misclassified panel shows images that really are misclassified."""
import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from mnist_ten import config as config_lib
from mnist_ten import methods
from mnist_ten import plots
from mnist_ten import run as run_lib
from mnist_ten import train

from tests.conftest import ROOT

matplotlib_image = pytest.importorskip("matplotlib.image")


@pytest.fixture(scope="module")
def finished_run(toy_idx_dir, tmp_path_factory):
  c = config_lib.base()
  c.name, c.data.name, c.data.idx_dir = "toy", "toy", str(toy_idx_dir)
  c.model = config_lib.model_config("mlp", widths=(32,))
  c.batch_size, c.eval_batch_size = 16, 20
  c.num_steps, c.log_every, c.eval_every, c.checkpoint_every = 6, 2, 2, 6
  workdir = tmp_path_factory.mktemp("plotted")
  train.train_and_evaluate(c, workdir)
  return workdir


def _non_blank(path):
  image = matplotlib_image.imread(path)
  return image.ndim == 3 and image.shape[0] > 50 and image.std() > 0.01


def test_a_finished_run_writes_each_figure_and_tensorboard_images(finished_run):
  names = {p.stem for p in (finished_run / "plots").glob("*.png")}
  assert names == {"wrong_predictions", "confusion", "accuracy", "losses", "views", "features"}
  for path in (finished_run / "plots").glob("*.png"):
    assert _non_blank(path), path
  events = b"".join(p.read_bytes() for p in (finished_run / "tensorboard").iterdir())
  for name in names:
    assert f"plots/{name}".encode() in events
  assert b"\x89PNG" in events


def test_misclassified_panel_shows_misclassified_images(finished_run):
  parts = run_lib.Parts.from_workdir(finished_run)
  labels = parts.dataset.test_labels
  predicted = (labels + 1 + np.arange(len(labels)) % 3 * (np.arange(len(labels)) % 2)) % 10
  predicted[::4] = labels[::4]  # a quarter right
  confidence = np.linspace(0.1, 0.9, len(labels))
  view = plots.RunView(finished_run, parts, (predicted, confidence))
  fig = plots.wrong_predictions(view)
  axes = [ax for ax in fig.axes if ax.get_title()]
  shown = plots.wrong_indices(labels, predicted, confidence)
  assert len(axes) == len(shown) == min(plots.MAX_WRONG, int((predicted != labels).sum()))
  for ax, i in zip(axes, shown):
    true, rest = ax.get_title().split("→")
    assert int(true) == labels[i] and int(rest.split()[0]) == predicted[i] != labels[i]
    np.testing.assert_array_equal(ax.images[0].get_array(), parts.dataset.test_images[i, ..., 0])
  assert list(confidence[shown]) == sorted(confidence[shown], reverse=True)
  # The figure drawn at the end of the run: every panel a real mistake of the EMA model.
  results = json.loads((finished_run / "results.json").read_text())
  assert f"{round((1 - results['test_accuracy_ema']) * len(labels))} of {len(labels)}" in (
      plots.wrong_predictions(plots.RunView(finished_run, parts, (
          _ema_predictions(finished_run, parts)))).texts[0].get_text())


def _ema_predictions(workdir, parts):
  import mnist_ten
  _, probs = mnist_ten.load_classifier(workdir)(parts.dataset.test_images)
  return probs.argmax(-1), probs.max(-1)


def test_redraw_from_the_workdir(finished_run):
  for path in (finished_run / "plots").glob("*.png"):
    path.unlink()
  out = subprocess.run([sys.executable, "-m", "mnist_ten.plots", str(finished_run)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert len(out.stdout.split()) == 6 and all(_non_blank(p) for p in out.stdout.split())
  missing = subprocess.run([sys.executable, "-m", "mnist_ten.plots", str(finished_run / "no")],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert missing.returncode == 2 and "holds no run" in missing.stderr


@pytest.mark.parametrize("config_file,views", [
    ("fixmatch", {"labeled", "weak", "strong (same images)"}),
    ("mixmatch", {"labeled", "unlabeled view 1", "unlabeled view 2", "mixed (mixup)"}),
    ("simclr", {"SimCLR view 1", "SimCLR view 2 (same images)"}),
    ("pretext", {"pretext (8 rotations/flips)"}),
    ("default", {"labeled", "strong (pseudo-labeled)"}),
])
def test_each_method_shows_the_views_it_trains_on(config_file, views):
  import runpy
  config = runpy.run_path(str(ROOT / "configs" / f"{config_file}.py"))["get_config"]("quick")
  while config.pretrain.get("method"):
    config = config.pretrain  # the first stage: the views named above
  method = methods.build(config, methods.Context(10, hflip_allowed=False))
  images = jax.random.uniform(jax.random.PRNGKey(0), (4, 28, 28, 1))
  shown = method.views(jax.random.PRNGKey(1), images, images)
  assert set(shown) == views
  for value in shown.values():
    assert value.shape == images.shape and 0.0 <= float(value.min()) <= float(value.max()) <= 1.0
  if config_file == "mixmatch":
    lam = np.asarray(method.samples(jax.random.PRNGKey(2))["mixup lambda"])
    assert lam.min() >= 0.5 and lam.max() <= 1.0 and lam.std() > 0


def test_pseudo_label_and_mixup_histograms(finished_run, tmp_path):
  import runpy
  import shutil
  workdir = tmp_path / "run"
  shutil.copytree(finished_run, workdir)
  results = json.loads((workdir / "results.json").read_text())
  results["pseudo_label_counts"] = [5, 0, 9, 1, 1, 1, 1, 1, 1, 80]  # class 9 takes most
  (workdir / "results.json").write_text(json.dumps(results))
  parts = run_lib.Parts.from_workdir(workdir)
  fig = plots.pseudo_labels(plots.RunView(workdir, parts))
  heights = [patch.get_height() for patch in fig.axes[0].patches]
  assert heights == results["pseudo_label_counts"]
  # MixMatch's mixup lambda, drawn as its loss draws it.
  config = runpy.run_path(str(ROOT / "configs" / "mixmatch.py"))["get_config"]("quick")
  parts.method = methods.build(config, methods.Context(10, hflip_allowed=False))
  fig = plots.samples(plots.RunView(workdir, parts))
  counts = [patch.get_height() for patch in fig.axes[0].patches]
  assert fig.axes[0].get_xlabel() == "mixup lambda" and sum(counts) > 100
  assert plots.samples(plots.RunView(finished_run, run_lib.Parts.from_workdir(finished_run))) \
      is None  # supervised draws nothing to show


def test_without_matplotlib_a_run_finishes_and_says_how_to_get_its_figures(
    toy_config, tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
  toy_config.plots = True
  results = train.train_and_evaluate(toy_config, tmp_path)
  assert (tmp_path / "results.json").exists() and results["steps"] == toy_config.num_steps
  assert not (tmp_path / "plots").exists()
  log = (tmp_path / "log.txt").read_text()
  assert "pip install -e '.[plots]'" in log and f"python -m mnist_ten.plots {tmp_path}" in log
