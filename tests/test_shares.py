"""Class shares of the pseudo-labels and predictions, against what the
labeled set implies: the arithmetic, the warning's bounds, and the trainer
recording both in results.json and its log."""
import json

import numpy as np
import pytest

from mnist_ten import shares
from mnist_ten import train
from mnist_ten.errors import ConfigError


def test_shares_count_only_weighted_guesses_and_expected_shares_follow_the_labeled_set():
  np.testing.assert_allclose(shares.class_shares([0, 0, 1, 2], 4), [0.5, 0.25, 0.25, 0.0])
  np.testing.assert_allclose(shares.class_shares([0, 0, 1, 2], 3, weights=[1, 0, 0.5, 0]),
                             [0.5, 0.5, 0.0])
  np.testing.assert_allclose(shares.expected_shares(np.arange(10), 10), 0.1)
  np.testing.assert_allclose(shares.expected_shares([0, 0, 1], 2), [2 / 3, 1 / 3])
  np.testing.assert_allclose(shares.expected_shares([0, 1], 2, prior=(3, 1)), [0.75, 0.25])
  with pytest.raises(ConfigError, match="data.class_prior must be 2 shares"):
    shares.expected_shares([0, 1], 2, prior=(1, 1, 1))


def test_a_class_below_a_third_or_above_twice_its_share_is_named():
  expected = np.full(4, 0.25)
  # 0.08 < 0.25 / 3; 0.09 is above it; 0.51 > 2 x 0.25; 0.32 is within.
  found = shares.warnings(np.array([0.08, 0.09, 0.51, 0.32]), expected, "the pseudo-labels",
                          1 / 3, 2.0)
  assert len(found) == 2
  assert found[0].startswith("class 0 holds 8.0% of the pseudo-labels, the labeled set "
                             "implies 25.0% (0.32x; it may have been handed to another class")
  assert found[1].startswith("class 2 holds 51.0%") and "taken another class's images" in found[1]
  assert not shares.warnings(np.array([0.25, 0.25, 0.25, 0.25]), expected, "x", 1 / 3, 2.0)


def test_the_trainer_records_the_shares_and_warns(toy_config, tmp_path, caplog):
  toy_config.data.labels_per_class = 3
  toy_config.share_warn.low, toy_config.share_warn.high = 0.999, 1.001  # any deviation warns
  results = train.train_and_evaluate(toy_config, tmp_path)
  got = np.array(results["unlabeled_prediction_shares"])
  assert got.shape == (10,) and got.sum() == pytest.approx(1.0)
  assert results["class_share_warnings"]
  assert json.loads((tmp_path / "results.json").read_text())["class_share_warnings"] == \
      results["class_share_warnings"]
  assert "of the network's predictions on the unlabeled images" in caplog.text
  with pytest.raises(ConfigError, match="share_warn: needs 0 <= low <= 1 <= high"):
    toy_config.share_warn.low = 1.5
    train.train_and_evaluate(toy_config, tmp_path / "bad")


def test_a_propagating_run_records_the_pseudo_labels_shares(toy_config, tmp_path):
  toy_config.method = "propagate"
  toy_config.augment.strong = "affine(shift=0.05)"
  toy_config.propagate = dict(features="pixels(dim=32)", k=5, iterations=200, keep=0.5, mu=2,
                              lambda_u=1.0, agree_with_init=False)
  results = train.train_and_evaluate(toy_config, tmp_path)
  got = np.array(results["pseudo_label_shares"])
  counts = np.array(results["pseudo_label_counts"])
  np.testing.assert_allclose(got, counts / counts.sum(), atol=1e-6)
  assert "unlabeled_prediction_shares" in results
  assert "size_bounds_moved" not in results  # no bounds: nothing to record


def test_binding_size_bounds_are_recorded_and_the_shares_before_them_warned_about(
    toy_config, tmp_path, caplog):
  """The bounds hide a vanished class from the shares after them, so the
  trainer warns on the shares before them."""
  toy_config.method = "propagate"
  toy_config.augment.strong = ""
  toy_config.num_steps, toy_config.eval_every, toy_config.checkpoint_every = 2, 2, 2
  toy_config.share_warn.low, toy_config.share_warn.high = 0.999, 1.001
  toy_config.propagate = dict(features="pixels(dim=32)", k=5, iterations=200, keep=1.0, mu=2,
                              lambda_u=1.0, agree_with_init=False, size_bounds=(0.95, 1.05))
  toy_config.data.class_prior = (5,) + (1,) * 9  # class 0 must take 5/14 of the guesses
  results = train.train_and_evaluate(toy_config, tmp_path)
  before = np.array(results["raw_pseudo_label_shares"])
  after = np.array(results["pseudo_label_shares"])
  assert results["size_bounds_moved"] > 0 and not np.allclose(before, after)
  assert before.sum() == pytest.approx(1.0)
  prior = np.array((5,) + (1,) * 9) / 14
  assert (np.abs(after - prior) <= prior * 0.05 + 0.01).all()  # within the bounds
  assert any("of Poisson learning's labels (before size bounds" in w
             for w in results["class_share_warnings"])
  assert "the size bounds moved" in caplog.text


def test_propagate_refuses_size_bounds_that_exclude_the_implied_size(toy_config):
  from mnist_ten import methods
  toy_config.method = "propagate"
  toy_config.augment.strong = ""
  toy_config.propagate = dict(features="pixels(dim=32)", k=5, iterations=10, keep=1.0, mu=2,
                              lambda_u=1.0, agree_with_init=False, size_bounds=(1.2, 2.0))
  with pytest.raises(ConfigError, match=r"propagate.size_bounds=\(1.2, 2.0\) must be"):
    methods.build(toy_config, methods.Context(num_classes=10, hflip_allowed=False,
                                              image_shape=(24, 24, 1)))
