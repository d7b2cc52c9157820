"""Multiple-instance learning: the bags' draw, packing and masks, poolings
that ignore padding, the AUC arithmetic, and configs/mil.py end to end (from
scratch, and with a pretrained instance encoder kept frozen)."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnist_ten import config as config_lib
from mnist_ten import datasets
from mnist_ten import evaluate
from mnist_ten import models
from mnist_ten import run as run_lib
from mnist_ten import train
from mnist_ten.errors import ConfigError


def _labels(n=2000, seed=0):
  return np.random.default_rng(seed).integers(0, 10, n)


def test_bags_are_balanced_positive_exactly_when_they_hold_a_target_and_seeded():
  labels = _labels()
  index, bag_labels = datasets.draw_bags(labels, 201, mean=10, std=2, target=9,
                                         rng=np.random.default_rng(0))
  assert index.shape[0] == 201 and bag_labels.sum() == 101  # half positive, rounded up
  sizes = (index >= 0).sum(1)
  assert sizes.min() >= 1 and 8 < sizes.mean() < 12 and 1 < sizes.std() < 3
  for bag, label, size in zip(index, bag_labels, sizes):
    assert (bag[:size] >= 0).all() and (bag[size:] == -1).all()  # padding at the end only
    assert len(set(bag[:size])) == size  # no instance twice in a bag
    assert label == (labels[bag[:size]] == 9).any()
  again, _ = datasets.draw_bags(labels, 201, mean=10, std=2, target=9,
                                rng=np.random.default_rng(0))
  np.testing.assert_array_equal(again, index)
  other, _ = datasets.draw_bags(labels, 201, mean=10, std=2, target=9,
                                rng=np.random.default_rng(1))
  assert not np.array_equal(other[:, :5], index[:, :5])
  capped, _ = datasets.draw_bags(labels, 50, mean=10, std=5, target=3,
                                 rng=np.random.default_rng(0), max_size=12)
  assert capped.shape[1] <= 12


def test_packed_bags_carry_their_instances_and_a_mask_channel():
  images = np.random.default_rng(0).integers(1, 256, (30, 4, 4, 1)).astype(np.uint8)
  index = np.array([[3, 7, -1], [5, -1, -1], [0, 1, 2]])
  bags = datasets.pack_bags(images, index)
  assert bags.shape == (3, 3, 4, 4, 2) and bags.dtype == np.uint8
  instances, mask = datasets.unpack_bags(bags)
  np.testing.assert_array_equal(mask, index >= 0)
  np.testing.assert_array_equal(instances[0, 1], images[7])
  assert not instances[1, 1:].any()  # padding is blank
  assert datasets.is_bags(bags.shape[1:]) and not datasets.is_bags(images.shape[1:])


def test_make_bags_scores_instances_of_the_test_split_only_and_refuses_bad_values():
  (tr_x, tr_y), (te_x, te_y) = [(np.random.default_rng(s).integers(0, 255, (400, 6, 6, 1))
                                 .astype(np.uint8), _labels(400, s)) for s in (0, 1)]
  base = datasets.Dataset("toy", tr_x, tr_y, te_x, te_y, num_classes=10)
  bags = datasets.make_bags(base, num_train=20, num_test=30, mean=5, std=1, target=9)
  assert bags.train_images.shape[:1] == (20,) and bags.test_images.shape[:1] == (30,)
  assert bags.num_classes == 2 and bags.image_shape[1:] == (6, 6, 2)
  inst = bags.test_instance_labels
  _, mask = datasets.unpack_bags(bags.test_images)
  np.testing.assert_array_equal(inst >= 0, mask)
  np.testing.assert_array_equal(bags.test_labels, (inst == 1).any(1))
  with pytest.raises(ConfigError, match="target=12 is not a class"):
    datasets.make_bags(base, target=12)
  with pytest.raises(ConfigError, match="num_train >= 2"):
    datasets.make_bags(base, num_train=1)


@pytest.mark.parametrize("pooling", ["attention", "gated", "max", "mean"])
def test_poolings_ignore_padding_and_instance_order(pooling):
  model = models.build(config_lib.model_config(
      "mil", instance=dict(name="mlp", widths=(8,)), pooling=pooling, hidden=4), num_classes=2)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (20, 5, 5, 1)).astype(np.uint8)
  index = np.array([[0, 1, 2, -1, -1], [3, 4, -1, -1, -1]])
  bags = jnp.asarray(datasets.pack_bags(images, index), jnp.float32) / 255.0
  variables = model.init(jax.random.PRNGKey(0), bags)
  logits = model.apply(variables, bags)
  # Junk in the padding's pixels, more padding, and shuffled instances change nothing.
  junk = bags.at[:, 3:, ..., :-1].set(jnp.asarray(rng.uniform(size=(2, 2, 5, 5, 1))))
  longer = jnp.pad(bags, [(0, 0), (0, 3)] + [(0, 0)] * 3)
  shuffled = bags.at[0, :3].set(bags[0, jnp.array([2, 0, 1])])
  for other in (junk, longer, shuffled):
    np.testing.assert_allclose(model.apply(variables, other), logits, rtol=1e-5, atol=1e-6)
  _, weights = models.bag_outputs(model, variables, bags)
  if pooling in ("attention", "gated"):
    np.testing.assert_allclose(weights.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(weights[index < 0], 0.0)
  else:
    assert weights is None
  # An all-padding row (the evaluator pads its last chunk so) gives finite numbers.
  assert np.isfinite(model.apply(variables, jnp.zeros_like(bags))).all()


def test_bags_refuse_what_does_not_fit_them(tmp_path):
  from configs import mil
  with pytest.raises(ConfigError, match="cannot use batch norm"):
    models.build(config_lib.model_config(
        "mil", instance=dict(name="lenet", batch_norm=True)), num_classes=2)
  with pytest.raises(ConfigError, match="needs the name of an instance encoder"):
    models.build(config_lib.model_config("mil", instance=dict(widths=(8,))), num_classes=2)
  cases = [("model", "model 'lenet' takes single images"),
           ("augment", "does not apply to bags of instances"),
           ("standardize", "does not apply to bags"),
           ("frozen", "needs --config.init_from")]
  for change, message in cases:
    c = _quick(tmp_path)
    if change == "model":
      c.model = config_lib.model_config("lenet")
    elif change == "augment":
      c.augment.labeled = "affine(rotate=10)"
    elif change == "standardize":
      c.data.standardize = True
    else:
      c = _quick(tmp_path, "pretrained,quick")
    with pytest.raises(ConfigError, match=message):
      train.train_and_evaluate(c, tmp_path / change)
    assert not (tmp_path / change).exists()  # refused before anything is written
  plain = config_lib.base()
  plain.model = mil.get_config().model
  with pytest.raises(ConfigError, match="model 'mil' takes bags of instances"):
    run_lib.Parts.from_config(plain, _toy_images())


def _toy_images():
  rng = np.random.default_rng(0)
  x = rng.integers(0, 255, (40, 6, 6, 1)).astype(np.uint8)
  return datasets.Dataset("toy", x, _labels(40), x, _labels(40), num_classes=10)


def test_roc_auc_matches_hand_computed_cases():
  assert evaluate.roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
  assert evaluate.roc_auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
  assert evaluate.roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5  # ties count half
  # Pairs (positive > negative): 0.7 beats 0.3, 0.2; 0.4 beats 0.3, 0.2; loses to 0.5 -> 5/6.
  assert evaluate.roc_auc([1, 1, 0, 0, 0], [0.7, 0.4, 0.5, 0.3, 0.2]) == pytest.approx(5 / 6)
  assert np.isnan(evaluate.roc_auc([1, 1], [0.2, 0.3]))
  # Instance AUC: per bag (padding -1 left out, bags of one kind skipped), then the mean.
  labels = np.array([[1, 0, 0, -1], [0, 1, -1, -1], [1, 1, -1, -1]])
  weights = np.array([[0.5, 0.3, 0.2, 0.0], [0.6, 0.4, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]])
  assert evaluate.mean_bag_auc(labels, weights) == pytest.approx((1.0 + 0.0) / 2)


def _quick(tmp_path, preset="quick"):
  from configs import mil
  c = mil.get_config(preset)
  c.data.bags.num_train, c.data.bags.num_test, c.data.bags.mean = 16, 40, 4
  c.num_steps, c.log_every, c.eval_every, c.checkpoint_every = 10, 5, 10, 10
  return c


def test_mil_config_trains_on_bags_and_draws_them(tmp_path):
  # The attention pooling's run (bag and instance AUC) is test_launch.py's mil:quick.
  c = _quick(tmp_path, "pooling=max,quick")
  results = train.train_and_evaluate(c, tmp_path / "run")
  assert results["dataset"] == "mnist_bags" and results["steps"] == 10
  assert 0.0 <= results["test_auc_ema"] <= 1.0
  assert "test_instance_auc_ema" not in results  # the max pooling has no attention
  assert (tmp_path / "run" / "plots" / "bags.png").exists()
  assert not (tmp_path / "run" / "plots" / "wrong_predictions.png").exists()
  split = json.loads((tmp_path / "run" / "split.json").read_text())
  assert split["num_classes"] == 2 and len(split["image_shape"]) == 4


def test_pretrained_instance_encoder_is_loaded_and_stays_frozen(tmp_path):
  from configs import supervised
  source = supervised.get_config("quick,model=lenet")
  source.num_steps, source.log_every, source.eval_every, source.checkpoint_every = 4, 2, 4, 4
  source.plots = False
  train.train_and_evaluate(source, tmp_path / "lenet")
  c = _quick(tmp_path, "pretrained,quick")
  c.plots = False
  c.init_from = str(tmp_path / "lenet")
  train.train_and_evaluate(c, tmp_path / "mil")
  before = run_lib.load_weights(tmp_path / "lenet")
  after = run_lib.load_weights(tmp_path / "mil")
  # The encoder and its head (the digit probabilities the pooling sees):
  # copied, and not trained.
  copied = after["params"]["encoder"]["instance"]
  assert set(copied) == {"encoder", "head"}
  for part in ("encoder", "head"):
    for a, b in zip(jax.tree.leaves(before["params"][part]), jax.tree.leaves(copied[part])):
      np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(
      jax.tree.leaves(before["batch_stats"]["encoder"])[0],
      jax.tree.leaves(after["batch_stats"]["encoder"]["instance"]["encoder"])[0])
  with pytest.raises(ConfigError, match="init_scope='instance' is for a bag model"):
    wrong = supervised.get_config("quick,model=lenet")
    wrong.init_scope, wrong.init_from = "instance", str(tmp_path / "lenet")
    train.train_and_evaluate(wrong, tmp_path / "wrong")
