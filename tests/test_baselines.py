"""The seed projects' supervised baselines: training by epochs, inputs
standardised with the train images' statistics only, and the course's
printout of training and test accuracy on a few batches."""
import json

import numpy as np
import pytest

import mnist_ten
from mnist_ten import datasets
from mnist_ten import plots
from mnist_ten import run
from mnist_ten import train
from mnist_ten.errors import ConfigError


def test_epochs_become_steps_with_one_log_eval_and_checkpoint_per_epoch(toy_config):
  toy_config.data.labels_per_class = -1  # 300 labeled images
  toy_config.batch_size = 16
  toy_config.num_epochs = 2.0
  toy_config.log_every = toy_config.eval_every = 0
  parts = run.Parts.from_config(toy_config)
  assert parts.config.num_steps == 2 * 19  # ceil(300 / 16) steps an epoch
  assert parts.config.log_every == parts.config.eval_every == 19
  assert parts.config.checkpoint_every == 3  # set, so kept
  toy_config.steps_per_dispatch, toy_config.num_epochs = 4, 1.0
  toy_config.log_every = toy_config.eval_every = toy_config.checkpoint_every = 0
  assert run.Parts.from_config(toy_config).config.num_steps == 20  # whole dispatches
  toy_config.num_epochs = -1.0
  with pytest.raises(ConfigError, match="num_epochs must be >= 0"):
    run.Parts.from_config(toy_config)


def test_standardised_inputs_use_the_train_images_only_and_reload(toy_config, tmp_path):
  toy_config.data.standardize = True
  toy_config.data.validation_size = 50
  results = train.train_and_evaluate(toy_config, tmp_path)
  saved = json.loads((tmp_path / "config.json").read_text())
  data = datasets.load(toy_config.data)
  split = json.loads((tmp_path / "split.json").read_text())
  held_out = np.zeros(len(data.train_images), bool)
  held_out[split["validation"]] = True
  seen = data.train_images[~held_out].astype(np.float64) / 255.0
  np.testing.assert_allclose(saved["model"]["standardize"], [seen.mean(), seen.std()])
  # The saved config rebuilds the same model: its predictions match the run's.
  labels, _ = mnist_ten.load_classifier(tmp_path)(data.test_images)
  assert np.mean(labels == data.test_labels) == pytest.approx(results["test_accuracy_ema"])
  train.train_and_evaluate(toy_config, tmp_path)  # a finished run: the same config resumes


def test_the_course_printout_shows_training_and_testing_accuracy(toy_config, tmp_path):
  toy_config.data.labels_per_class = -1
  toy_config.num_epochs, toy_config.eval_every = 1.0, 0
  toy_config.evals.batches = dict(every=5, batches=2)
  train.train_and_evaluate(toy_config, tmp_path)
  log = (tmp_path / "log.txt").read_text()
  printed = [line.split("INFO ")[1] for line in log.splitlines() if "% testing accuracy" in line]
  # 19 steps an epoch: at steps 5, 10, 15 and the final one, epoch 1 batch 0.
  assert [p.split(" -> ")[0] for p in printed] == ["[0][5]", "[0][10]", "[0][15]", "[1][0]"]
  assert all(p.endswith("% testing accuracy") and "% training accuracy" in p for p in printed)
  evals = [json.loads(line) for line in (tmp_path / "evals.jsonl").read_text().splitlines()]
  last = evals[-1]["batches"]
  assert set(last) == {"train_ema", "train_raw", "test_ema", "test_raw"}
  assert sum(map(sum, last["test_raw"]["confusion"])) == 2 * 20  # 2 batches of 20
  # A run by epochs draws its accuracy over epochs too (a second axis on top).
  view = plots.RunView(tmp_path, run.Parts.from_workdir(tmp_path))
  assert plots._steps_per_epoch(view) == 19
  fig = plots.accuracy(view)
  assert any(ax.get_xlabel() == "epoch" for ax in fig.axes[0].child_axes)


def test_baseline_presets_name_one_system():
  from configs import baselines
  c = baselines.get_config("fashion_mlp64")
  assert c.data.name == "fashion_mnist" and tuple(c.model.widths) == (64,)
  assert c.num_epochs == 10 and c.optim.name == "adam" and c.optim.lr == 1e-3
  assert c.ema_decay == 0 and not c.augment.labeled and c.data.labels_per_class == -1
  assert baselines.get_config("course_mlp2,epochs=3").num_epochs == 3
  with pytest.raises(ConfigError, match="name one system"):
    baselines.get_config("quick")
