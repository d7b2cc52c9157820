"""experiments/: the tables' time accounting and the pseudo-label diagnostic."""
import json

import numpy as np

from experiments import pseudo_labels, report


def test_two_stage_train_time_counts_both_stages_and_preparation(tmp_path):
  (tmp_path / "pretrain").mkdir()
  (tmp_path / "results.json").write_text(json.dumps(
      {"train_seconds": 100.0, "prepare_seconds": 20.0}))
  (tmp_path / "pretrain" / "results.json").write_text(json.dumps(
      {"train_seconds": 200.0, "prepare_seconds": 30.0}))
  assert report.load_results(tmp_path)["train_seconds_all_stages"] == 350.0
  assert report.load_results(tmp_path / "missing") is None


def test_pseudo_label_diagnostic_reads_hidden_labels_outside_training(toy_config, tmp_path):
  from mnist_ten import datasets, splits, train
  config = toy_config
  config.method = "propagate"
  config.augment.strong = "affine(shift=0.05)"
  config.propagate = dict(features="pixels(dim=32)", k=5, iterations=200, keep=0.8, mu=2,
                          lambda_u=1.0, agree_with_init=False)
  train.train_and_evaluate(config, tmp_path)
  out = pseudo_labels.diagnose(tmp_path, threshold=0.5)
  assert out["method"] == "propagate" and out["num_unlabeled"] == 290
  assert out["graph_pseudo_label_accuracy"] > 0.9
  assert abs(out["graph_kept_fraction"] - 0.8) < 0.05
  assert out["graph_kept_accuracy"] >= out["graph_pseudo_label_accuracy"] - 1e-9
  # The model's accuracy on the unlabeled images, recomputed here by hand.
  dataset = datasets.load(config.data)
  split = splits.make_split(dataset.train_labels, 10, labels_per_class=1, label_seed=0)
  from mnist_ten.inference import load_classifier
  predicted, _ = load_classifier(tmp_path)(dataset.train_images[split.unlabeled])
  expected = (predicted == dataset.train_labels[split.unlabeled]).mean()
  np.testing.assert_allclose(out["model_accuracy_on_unlabeled"], expected)
