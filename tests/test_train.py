import json
import pathlib
import shutil

import jax
import numpy as np
import pytest

from mnist_ten import checkpoint
from mnist_ten import input_pipeline
from mnist_ten import optim
from mnist_ten import train
from mnist_ten.errors import TrainingError, WorkdirError
from tests.conftest import assert_resume_equals_uninterrupted


def _build(config):
  setup = train.Setup(config)
  tx, _ = optim.for_config(config)
  state = train.init_state(setup.model, tx, config, setup.dataset.image_shape, setup.mesh)
  data = input_pipeline.make_train_data(setup.dataset, setup.split, setup.mesh)
  step = train.make_train_step(setup.model, setup.method, config, setup.mesh)
  return state, data, step


def test_steps_lower_the_loss_and_compile_once(toy_config):
  toy_config.data.labels_per_class = -1
  toy_config.augment.labeled = ""
  toy_config.num_steps = 1000  # the cosine schedule would otherwise end at step 6
  state, data, step = _build(toy_config)
  losses = []
  for _ in range(30):
    state, metrics = step(state, data)
    losses.append(float(metrics["loss"]))
  assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
  assert step.compiled._cache_size() == 1  # pylint: disable=protected-access


def test_rounds_that_differ_in_lr_and_steps_share_one_program(toy_config):
  # As default's rounds do: the schedule's numbers are an argument, not constants.
  state, data, step = _build(toy_config)
  later = toy_config.copy_and_resolve_references()
  later.optim.lr, later.num_steps = 0.3 * toy_config.optim.lr, toy_config.num_steps + 7
  later_state, _, later_step = _build(later)
  assert step.lower(state, data).as_text() == later_step.lower(later_state, data).as_text()
  _, metrics = step(state, data)
  _, later_metrics = later_step(later_state, data)
  np.testing.assert_allclose([float(metrics["lr"]), float(later_metrics["lr"])],
                             [toy_config.optim.lr, later.optim.lr], rtol=1e-6)


def test_scan_of_steps_equals_single_steps(toy_config):
  state, data, step = _build(toy_config)
  for _ in range(4):
    state, _ = step(state, data)
  toy_config.steps_per_dispatch = 2
  toy_config.checkpoint_every = 2
  state2, data2, step2 = _build(toy_config)
  for _ in range(2):
    state2, _ = step2(state2, data2)
  assert int(state2.step) == 4
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(state2.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_run_writes_workdir(toy_config, tmp_path):
  results = train.train_and_evaluate(toy_config, tmp_path)
  for name in ["config.json", "split.json", "results.json", "metrics.jsonl", "log.txt"]:
    assert (tmp_path / name).exists(), name
  assert list((tmp_path / "tensorboard").iterdir())
  saved = json.loads((tmp_path / "results.json").read_text())
  assert saved["test_accuracy_ema"] == results["test_accuracy_ema"]
  assert saved["steps"] == 6 and len(saved["labeled_indices"]) == 10
  split = json.loads((tmp_path / "split.json").read_text())
  assert split["labeled"] == saved["labeled_indices"]
  assert checkpoint.Checkpointer(tmp_path / "checkpoints").latest_step() == 6


def test_resume_equals_uninterrupted_run(toy_config, tmp_path):
  assert_resume_equals_uninterrupted(toy_config, tmp_path)


def test_the_whole_run_is_broken_into_phases(toy_config, tmp_path):
  """results.json's phase_seconds: the graph's stages under prepare, compile,
  steps, evaluations and checkpoint writes, summing to about the wall time."""
  toy_config.method = "propagate"
  toy_config.propagate = dict(mu=1, lambda_u=1.0, k=5, iterations=50, keep=1.0,
                              features="pixels(dim=8)", vote=0, refine=2.0, reseed=0.5,
                              size_bounds=())
  toy_config.augment.strong = toy_config.augment.labeled
  results = train.train_and_evaluate(toy_config, tmp_path)
  phases = results["phase_seconds"]
  assert {"data load", "init or restore", "prepare: features", "prepare: kNN graph",
          "prepare: Poisson learning", "prepare: refinement", "compile", "steps",
          "evaluations", "checkpoint writes"} <= set(phases)
  assert all(v >= 0 for v in phases.values()), {k: v for k, v in phases.items() if v < 0}
  assert sum(phases.values()) == pytest.approx(results["wall_seconds"], rel=0.25, abs=2.0)
  assert "phases: data load" in (tmp_path / "log.txt").read_text()


def test_unlabeled_labels_cannot_influence_training(toy_config, tmp_path, toy_idx_dir):
  """Scrambling the labels of every unlabeled image changes nothing."""
  from tests.conftest import write_idx
  from mnist_ten import datasets
  scrambled = tmp_path / "scrambled"
  shutil.copytree(toy_idx_dir, scrambled)
  labels = datasets.read_idx(scrambled / "train-labels-idx1-ubyte.gz").copy()
  toy_config.data.label_seed = 1
  run = train.train_and_evaluate(toy_config, tmp_path / "a")
  labeled = np.asarray(run["labeled_indices"])
  keep = labels[labeled].copy()
  labels = np.random.default_rng(5).permutation(labels)
  labels[labeled] = keep
  write_idx(scrambled / "train-labels-idx1-ubyte.gz", labels)
  toy_config.data.idx_dir = str(scrambled)
  toy_config.data.labeled_indices = tuple(int(i) for i in labeled)
  other = train.train_and_evaluate(toy_config, tmp_path / "b")
  a = checkpoint.Checkpointer(tmp_path / "a" / "checkpoints").restore_raw()["params"]
  b = checkpoint.Checkpointer(tmp_path / "b" / "checkpoints").restore_raw()["params"]
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  assert other["test_accuracy_raw"] == run["test_accuracy_raw"]


def test_workdir_of_another_config_is_refused_untouched(toy_config, tmp_path):
  train.train_and_evaluate(toy_config, tmp_path)
  before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
  toy_config.optim.lr = 0.5
  with pytest.raises(WorkdirError, match=r"different config \(optim.lr: 0.1 -> 0.5\)"):
    train.train_and_evaluate(toy_config, tmp_path)
  after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
  assert before == after


def test_nan_loss_stops_without_saving(toy_config, tmp_path):
  toy_config.num_steps = 9
  toy_config.checkpoint_every = 3
  toy_config.log_every = 3
  train.train_and_evaluate(toy_config, tmp_path / "ok")  # a healthy run for contrast
  toy_config.optim.lr = 1e30
  toy_config.optim.name = "sgd"
  with pytest.raises(TrainingError, match=r"diverged at step \d+: loss became (nan|inf|-inf)"
                     ) as failure:
    train.train_and_evaluate(toy_config, tmp_path / "nan")
  bad_step = int(str(failure.value).split("at step ")[1].split(":")[0])
  assert 1 <= bad_step <= 3
  # NaN within the first log window: no checkpoint was saved, and it says so.
  assert "No checkpoint was saved before it" in str(failure.value)
  assert not (tmp_path / "nan" / "results.json").exists()
  ckpt = checkpoint.Checkpointer(tmp_path / "nan" / "checkpoints")
  for step in [s for s in [3, 6] if (tmp_path / "nan" / "checkpoints" / str(s)).exists()]:
    params = ckpt.restore_raw(step)["params"]
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


def test_init_from_copies_the_encoder(toy_config, tmp_path):
  train.train_and_evaluate(toy_config, tmp_path / "source")
  source = checkpoint.Checkpointer(tmp_path / "source" / "checkpoints").restore_raw()
  toy_config.init_from = str(tmp_path / "source")
  toy_config.num_steps = 1
  toy_config.checkpoint_every = 1
  toy_config.log_every = 1
  toy_config.eval_every = 1
  toy_config.optim.lr = 1e-9  # one negligible step: the weights stay the copies
  train.train_and_evaluate(toy_config, tmp_path / "target")
  target = checkpoint.Checkpointer(tmp_path / "target" / "checkpoints").restore_raw()
  for x, y in zip(jax.tree.leaves(source["ema_params"]["encoder"]),
                  jax.tree.leaves(target["params"]["encoder"])):
    np.testing.assert_allclose(x, y, atol=1e-6)
  assert not np.allclose(source["ema_params"]["head"]["kernel"],
                         target["params"]["head"]["kernel"])


def test_init_from_a_missing_run(toy_config, tmp_path):
  toy_config.init_from = str(tmp_path / "nowhere")
  with pytest.raises(WorkdirError, match="holds no checkpoints"):
    train.train_and_evaluate(toy_config, tmp_path / "run")
  # Refused before any folder is made: the corrected command then starts afresh there.
  assert not (tmp_path / "run").exists()
  (tmp_path / "nowhere" / "checkpoints").mkdir(parents=True)  # a run that never saved
  with pytest.raises(WorkdirError, match="holds no complete checkpoint"):
    train.train_and_evaluate(toy_config, tmp_path / "run")
  assert not (tmp_path / "run").exists()


def test_a_workdir_that_is_a_file_is_refused(toy_config, tmp_path):
  (tmp_path / "run").write_text("not a folder")
  with pytest.raises(WorkdirError, match="is a file, not a folder"):
    train.train_and_evaluate(toy_config, tmp_path / "run")
  assert (tmp_path / "run").read_text() == "not a folder"


def test_validation_set_is_monitored_not_trained_on(toy_config, tmp_path):
  toy_config.data.validation_size = 50
  results = train.train_and_evaluate(toy_config, tmp_path)
  split = json.loads((tmp_path / "split.json").read_text())
  assert len(split["validation"]) == 50
  assert not set(split["validation"]) & set(split["labeled"])
  assert split["num_unlabeled"] == 300 - 50 - 10
  assert 0.0 <= results["val_accuracy_ema"] <= 1.0
  assert "labels are used for monitoring only" in (tmp_path / "log.txt").read_text()


def test_two_stage_config_pretrains_then_transfers(toy_config, tmp_path):
  from mnist_ten import config as config_lib
  stage1 = config_lib.base()
  stage1.method = "rotation"
  stage1.batch_size = 16
  stage1.augment.labeled = ""
  stage1.num_steps, stage1.log_every, stage1.eval_every, stage1.checkpoint_every = 4, 2, 4, 2
  stage1.evals = {"knn": {}}
  toy_config.pretrain = stage1
  toy_config.freeze_encoder = True
  results = train.train_and_evaluate(toy_config, tmp_path)
  pre = json.loads((tmp_path / "pretrain" / "results.json").read_text())
  assert pre["steps"] == 4 and pre["config"] == "toy/pretrain" and results["steps"] == 6
  # Stage 1 used the main config's data and model whatever its nested copy said.
  assert json.loads((tmp_path / "pretrain" / "config.json").read_text())["model"]["name"] == "mlp"
  source = checkpoint.Checkpointer(tmp_path / "pretrain" / "checkpoints").restore_raw()
  target = checkpoint.Checkpointer(tmp_path / "checkpoints").restore_raw()
  for x, y in zip(jax.tree.leaves(source["ema_params"]["encoder"]),
                  jax.tree.leaves(target["params"]["encoder"])):
    np.testing.assert_array_equal(x, y)  # frozen: the transferred encoder never moved
  # Rerunning resumes both finished stages: nothing retrains, same result.
  again = train.train_and_evaluate(toy_config, tmp_path)
  assert again["test_accuracy_ema"] == results["test_accuracy_ema"]


def test_stages_chain_each_from_the_one_before(toy_config, tmp_path):
  stage = toy_config.copy_and_resolve_references()
  stage.num_steps, stage.checkpoint_every = 2, 2
  toy_config.pretrain = stage.copy_and_resolve_references()
  toy_config.pretrain.pretrain = stage.copy_and_resolve_references()
  toy_config.pretrain.pretrain.num_steps = 3
  chain = train.stages(toy_config, tmp_path)
  assert [d for _, d in chain] == [tmp_path / "pretrain" / "pretrain", tmp_path / "pretrain",
                                   tmp_path]
  assert [c.init_from for c, _ in chain] == ["", str(tmp_path / "pretrain" / "pretrain"),
                                             str(tmp_path / "pretrain")]
  train.train_and_evaluate(toy_config, tmp_path)
  first = json.loads((tmp_path / "pretrain" / "pretrain" / "results.json").read_text())
  assert first["steps"] == 3 and first["config"] == "toy/pretrain/pretrain"
  # Each stage starts from the one before (the weights themselves: see the
  # two-stage test above).
  assert f"from {tmp_path / 'pretrain' / 'pretrain'}" in (tmp_path / "pretrain" / "log.txt").read_text()
  assert f"from {tmp_path / 'pretrain'}\n" in (tmp_path / "log.txt").read_text()
  # An explicit init_from ends the chain: nothing before it runs.
  toy_config.pretrain.init_from = str(tmp_path / "pretrain" / "pretrain")
  assert [d for _, d in train.stages(toy_config, tmp_path)] == [tmp_path / "pretrain", tmp_path]


def test_log_means_skip_unmeasured_metrics_but_never_a_nan_loss():
  pending = [{"loss": 1.0, "loss/pretext": float("nan")}, {"loss": 3.0, "loss/pretext": 4.0}]
  assert train._window_means(pending) == {"loss": 2.0, "loss/pretext": 4.0}  # pylint: disable=protected-access
  pending[0]["loss"] = float("nan")
  assert np.isnan(train._window_means(pending)["loss"])  # pylint: disable=protected-access


# Every image method; the LeNet for default here: the residual CNN runs
# default:quick in test_launch.py.
@pytest.mark.parametrize("preset", [
    "default.py:quick,model=lenet", "fixmatch.py:quick", "flexmatch.py:quick",
    "freematch.py:quick", "softmatch.py:quick", "mixmatch.py:quick", "simclr.py:quick",
    "pretext.py:quick", "entropy_min.py:quick", "supervised.py:quick", "knn.py:quick",
    "fixmatch.py:quick tfdata"])
def test_colour_images_of_another_size_train_end_to_end(preset, tmp_path):
  """Any TFDS image dataset, not only 28x28 greyscale: 32x32 RGB images (as
  CIFAR-10's) through the graph's features, the models and the augmentations
  (flips on), from an array cache as a prepared TFDS dataset leaves one."""
  import importlib
  from tests.conftest import make_toy_arrays
  from mnist_ten import datasets
  (tx, ty), (vx, vy) = make_toy_arrays(size=32)
  rgb = lambda x: np.stack([x, x[:, ::-1], 255 - x], -1)  # pylint: disable=unnecessary-lambda-assignment
  datasets.save_cache(datasets.Dataset(
      name="toy_rgb", train_images=rgb(tx), train_labels=ty.astype(np.int32),
      test_images=rgb(vx), test_labels=vy.astype(np.int32), num_classes=10), tmp_path / "cache")
  preset, _, pipeline = preset.partition(" ")  # "... tfdata": fed by the tf.data pipeline
  module, arg = preset.split(":", 1)
  config = importlib.import_module(f"configs.{module[:-3]}").get_config(arg)
  stage = config
  while stage.get("method"):
    stage.data.name, stage.data.cache_dir, stage.data.hflip = "toy_rgb", str(tmp_path / "cache"), "true"
    stage.data.pipeline = pipeline or "device"
    stage = stage.get("pretrain") or {}
  config.plots = preset.startswith("default")  # colour figures once (seconds a run)
  results = train.train_and_evaluate(config, tmp_path / "run")
  assert results["dataset"] == "toy_rgb"
  assert json.loads((tmp_path / "run" / "split.json").read_text())["image_shape"] == [32, 32, 3]
  assert 0.0 <= results["test_accuracy_ema"] <= 1.0
  if config.plots:  # RGB images in the figures, and a pseudo-label histogram
    plotted = {p.stem for p in (tmp_path / "run" / "plots").glob("*.png")}
    assert {"wrong_predictions", "views", "pseudo_labels"} <= plotted


def test_a_workdir_from_before_config_evals_resumes(toy_config, tmp_path):
  """A two-stage run whose config.json files predate config.evals (they had
  eval_with) resumes with today's config instead of being refused."""
  from mnist_ten import config as config_lib
  stage1 = toy_config.copy_and_resolve_references()
  stage1.evals = {"knn": {}}
  toy_config.pretrain = stage1
  toy_config.num_steps, stage1.num_steps = 6, 4
  stage1.log_every, stage1.eval_every, stage1.checkpoint_every = 2, 4, 2
  full = train.train_and_evaluate(toy_config, tmp_path)
  for path, eval_with in [(tmp_path / "config.json", "head"),
                          (tmp_path / "pretrain" / "config.json", "knn")]:
    saved = json.loads(path.read_text())
    stages = [saved] + ([saved["pretrain"]] if saved["pretrain"].get("method") else [])
    for stage, kind in zip(stages, [eval_with, "knn"]):
      for key in ("evals", "eval_report", "eval_median_of", "plots"):
        del stage[key]
      stage["eval_with"] = kind
    path.write_text(json.dumps(saved))
    upgraded = config_lib.from_saved(saved)
    assert "eval_with" not in upgraded and set(upgraded.evals) == (
        {"knn"} if eval_with == "knn" else {"head", "vote"})
  (tmp_path / "results.json").unlink()
  again = train.train_and_evaluate(toy_config, tmp_path)  # finished: evaluated, not retrained
  assert again["test_accuracy_ema"] == full["test_accuracy_ema"]
  assert again["steps"] == 6


def test_the_end_of_run_figures_show_the_reported_predictions(toy_config, tmp_path, monkeypatch):
  from mnist_ten import plots
  seen = []
  monkeypatch.setattr(plots, "draw", lambda view, writer=None, step=0: seen.append(view) or [])
  toy_config.plots = True
  results = train.train_and_evaluate(toy_config, tmp_path)
  (view,) = seen
  predicted, confidence = view.predictions
  assert view.report == results["report_eval"] == "head"
  assert np.mean(predicted == view.test_labels) == results["test_accuracy_ema"]
  assert ((0 < confidence) & (confidence <= 1)).all()
  assert view.features().shape == (len(view.test_labels), 32)  # the MLP's encoder width


def test_a_failing_figure_costs_a_warning_not_the_run(toy_config, tmp_path, monkeypatch):
  from mnist_ten import plots

  def broken(run):
    raise ValueError("a bug in a plot")
  monkeypatch.setitem(plots.PLOTS._entries, "broken", broken)  # pylint: disable=protected-access
  toy_config.plots = True
  results = train.train_and_evaluate(toy_config, tmp_path)
  assert json.loads((tmp_path / "results.json").read_text()) == json.loads(
      json.dumps(results))
  assert "plots failed (ValueError: a bug in a plot)" in (tmp_path / "log.txt").read_text()


@pytest.mark.parametrize("setting", ["", "off"])
def test_the_compilation_cache_is_on_by_default_and_off_by_flag(setting, toy_idx_dir, tmp_path):
  """Two runs of one config in two processes: the first fills
  $MNIST_TEN_CACHE/jax, the second reads it and compiles its step faster;
  compilation_cache="off" writes no cache."""
  import os
  import subprocess
  import sys
  root = pathlib.Path(__file__).resolve().parents[1]
  script = f"""
import json, sys
from tests.conftest import toy_config_for
from mnist_ten import train
c = toy_config_for({str(toy_idx_dir)!r})
c.compilation_cache = {setting!r}
print(json.dumps(train.train_and_evaluate(c, sys.argv[1])["compile_seconds"]))
"""
  env = {**os.environ, "PYTHONPATH": str(root), "MNIST_TEN_CACHE": str(tmp_path / "cache")}
  seconds = []
  for run in ("a", "b"):
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / run)], cwd=root,
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    seconds.append(float(out.stdout.strip().splitlines()[-1]))
  entries = list((tmp_path / "cache" / "jax").glob("*")) if setting != "off" else []
  if setting == "off":
    assert not (tmp_path / "cache" / "jax").exists()
  else:
    assert entries and seconds[1] < seconds[0]
