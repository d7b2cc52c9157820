"""Method state, and the rules of the methods that keep one (FlexMatch,
FreeMatch, SoftMatch, ReMixMatch's running marginal) on hand-computed cases."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnist_ten import losses
from mnist_ten.methods import flexmatch
from mnist_ten.methods import freematch
from mnist_ten.methods import softmatch
from tests.conftest import assert_resume_equals_uninterrupted


def test_the_running_marginal_is_the_mean_of_the_last_batches():
  queue = losses.marginal_queue(num_classes=2, length=2)
  means = []
  for batch in ([[1.0, 0.0]], [[0.0, 1.0]], [[0.5, 0.5], [0.5, 0.5]]):
    queue, predicted = losses.update_marginal(queue, jnp.asarray(batch))
    means.append(np.asarray(predicted))
  # One batch seen: its mean; then the mean of the last two batch means.
  np.testing.assert_allclose(means, [[1.0, 0.0], [0.5, 0.5], [0.25, 0.75]])
  # Length 1: this batch's mean alone (the alignment before the queue existed).
  one = losses.marginal_queue(2, 1)
  one, _ = losses.update_marginal(one, jnp.asarray([[1.0, 0.0]]))
  _, predicted = losses.update_marginal(one, jnp.asarray([[0.2, 0.8], [0.4, 0.6]]))
  np.testing.assert_allclose(predicted, [0.3, 0.7])


def test_flexmatch_learning_effect_thresholds_and_kept_predictions():
  selected = jnp.asarray([-1, -1, -1, -1, -1, 0])
  # Warm-up: the 5 unused images count as a class, beta_0 = 1/5; without: 1/1.
  np.testing.assert_allclose(flexmatch.learning_effect(selected, 3, warmup=True), [0.2, 0, 0])
  np.testing.assert_allclose(flexmatch.learning_effect(selected, 3, warmup=False), [1, 0, 0])
  selected = jnp.asarray([-1, -1, 0, 0, 1, 2])
  np.testing.assert_allclose(flexmatch.learning_effect(selected, 3, warmup=True),
                             [1.0, 0.5, 0.5])
  beta = jnp.asarray([0.2, 0.0, 1.0])
  np.testing.assert_allclose(flexmatch.class_thresholds(beta, 0.95, "convex"),
                             [0.95 * 0.2 / 1.8, 0.0, 0.95], rtol=1e-6)
  np.testing.assert_allclose(flexmatch.class_thresholds(beta, 0.95, "linear"), [0.19, 0, 0.95],
                             rtol=1e-6)
  np.testing.assert_allclose(flexmatch.class_thresholds(beta, 0.95, "concave"),
                             [0.95 * np.log2(1.2), 0.0, 0.95], rtol=1e-6)
  # Only confident predictions are written, at their images' rows.
  probs = jnp.asarray([[0.96, 0.02, 0.02], [0.5, 0.4, 0.1], [0.0, 0.01, 0.99]])
  kept = flexmatch.keep_confident(jnp.full((6,), -1), jnp.asarray([4, 1, 0]), probs, 0.95)
  np.testing.assert_array_equal(kept, [2, -1, -1, -1, 0, -1])
  # An image drawn twice: an unconfident copy never erases a confident one,
  # whatever their order; two confident ones keep the larger class.
  for order in ([0, 1], [1, 0]):
    kept = flexmatch.keep_confident(jnp.asarray([1, 1]), jnp.asarray([0, 0]),
                                    jnp.asarray(np.asarray(probs)[order][:, :]), 0.95)
    np.testing.assert_array_equal(kept, [0, 1])
  kept = flexmatch.keep_confident(jnp.asarray([1]), jnp.asarray([0, 0]),
                                  jnp.asarray([[0.96, 0.02, 0.02], [0.0, 0.01, 0.99]]), 0.95)
  np.testing.assert_array_equal(kept, [2])


def test_freematch_averages_thresholds_and_fairness():
  stats = freematch.initial(2)
  probs = jnp.asarray([[0.9, 0.1], [0.3, 0.7]])
  stats = freematch.update(stats, probs, momentum=0.5)
  np.testing.assert_allclose(stats["tau"], 0.5 * 0.5 + 0.5 * 0.8)
  np.testing.assert_allclose(stats["p_model"], [0.55, 0.45])
  np.testing.assert_allclose(stats["label_hist"], [0.5, 0.5])
  np.testing.assert_allclose(freematch.class_thresholds(stats), [0.65, 0.65 * 0.45 / 0.55],
                             rtol=1e-6)
  # Fairness: both strong predictions are class 0, so only class 0 keeps a
  # share (pbar = [1, 0]); the target is p~ / h normalised, [0.55, 0.45].
  logits_strong = jnp.log(jnp.asarray([[0.8, 0.2], [0.6, 0.4]]))
  value = freematch.fairness(logits_strong, jnp.ones(2), stats)
  np.testing.assert_allclose(value, 0.55 * np.log(1 + 1e-12) + 0.45 * np.log(1e-12), rtol=1e-5)
  assert float(freematch.fairness(logits_strong, jnp.zeros(2), stats)) == 0.0
  # Its gradient reaches the strong logits of the masked images only.
  grad = np.asarray(jax.grad(lambda l: freematch.fairness(l, jnp.asarray([1.0, 1.0, 0.0]),
                                                           stats))(
      jnp.log(jnp.asarray([[0.7, 0.3], [0.2, 0.8], [0.6, 0.4]]))))
  assert np.all(grad[2] == 0.0) and np.all(grad[:2] != 0.0)


def test_softmatch_alignment_confidence_and_weights():
  stats = softmatch.initial(2)
  probs = jnp.asarray([[0.8, 0.2], [0.4, 0.6]])
  stats, aligned = softmatch.align(stats, probs, jnp.asarray([0.5, 0.5]), momentum=0.5)
  # The first batch's mean replaces the initial p~: [0.6, 0.4].
  np.testing.assert_allclose(stats["p_model"], [0.6, 0.4])
  row = np.asarray([0.8 / 0.6, 0.2 / 0.4])
  np.testing.assert_allclose(aligned[0], row / row.sum(), rtol=1e-5)
  stats, _ = softmatch.align(stats, jnp.asarray([[1.0, 0.0]]), jnp.asarray([0.5, 0.5]), 0.5)
  np.testing.assert_allclose(stats["p_model"], [0.8, 0.2])  # then an EMA
  stats = softmatch.update_confidence(softmatch.initial(2), jnp.asarray([0.2, 0.4]), 0.5)
  np.testing.assert_allclose([stats["mu"], stats["var"]], [0.5 * 0.5 + 0.5 * 0.3,
                                                           0.5 * 1.0 + 0.5 * 0.02], rtol=1e-6)
  w = softmatch.weights(jnp.asarray([0.9, 0.5]), mu=0.7, var=0.04, n_sigma=2.0)
  np.testing.assert_allclose(w, [1.0, np.exp(-2.0)], rtol=1e-6)


def _stateful(toy_config, method):
  toy_config.method = method
  toy_config.fixmatch = dict(mu=2, threshold=0.0 if method == "flexmatch" else 0.95,
                             lambda_u=1.0, rampup_steps=0, align=False, align_batches=1,
                             weak_pass="joint")
  toy_config.flexmatch = dict(warmup=True, mapping="convex")
  toy_config.freematch = dict(momentum=0.9, fairness=0.001)
  toy_config.softmatch = dict(momentum=0.9, n_sigma=2.0)
  toy_config.augment.weak = toy_config.augment.strong = "affine(rotate=5, shift=0.05)"
  return toy_config


@pytest.mark.parametrize("method,pipeline", [("freematch", "device"), ("softmatch", "device"),
                                             ("flexmatch", "device"), ("flexmatch", "tfdata")])
def test_a_method_state_is_carried_checkpointed_and_resumed(method, pipeline, toy_config,
                                                           tmp_path):
  """The state changes over the steps, is saved with the weights, and a run
  stopped at step 3 ends bit-identical to one never stopped (state included)."""
  from mnist_ten import checkpoint
  config = _stateful(toy_config, method)
  config.data.pipeline = pipeline
  assert_resume_equals_uninterrupted(config, tmp_path)
  saved = checkpoint.Checkpointer(tmp_path / "full" / "checkpoints").restore_raw()["method_state"]
  if method == "freematch":
    assert float(saved["stats"]["tau"]) != pytest.approx(0.1)  # moved from 1/C
  elif method == "softmatch":
    assert bool(saved["seen"]) and float(saved["var"]) < 1.0
  else:
    # tau = 0: every drawn image's prediction is kept, at most 6 steps x 32 rows.
    written = int(np.sum(np.asarray(saved["selected"]) >= 0))
    assert 0 < written <= 6 * 32
  assert "threshold/c0" not in (tmp_path / "full" / "log.txt").read_text()  # TensorBoard only


def test_propagate_with_an_adaptive_rule_carries_and_resumes_the_rules_state(toy_config,
                                                                           tmp_path):
  """`propagate.consistency_rule=flexmatch`: FlexMatch's per-image state rides
  in propagate's run, checkpointed and resumed exactly."""
  from mnist_ten import checkpoint
  config = toy_config
  config.method = "propagate"
  config.propagate = dict(features="pixels(dim=8)", k=3, iterations=10, keep=1.0, mu=2,
                          lambda_u=1.0, agree_with_init=False, consistency=1.0,
                          threshold=0.0, consistency_rule="flexmatch")
  config.augment.weak = config.augment.strong = "affine(rotate=5, shift=0.05)"
  assert_resume_equals_uninterrupted(config, tmp_path)
  saved = checkpoint.Checkpointer(tmp_path / "full" / "checkpoints").restore_raw()["method_state"]
  # tau = 0: every drawn image's prediction is kept, at most 6 steps x 32 rows.
  assert 0 < int(np.sum(np.asarray(saved["selected"]) >= 0)) <= 6 * 32


@pytest.mark.parametrize("align", [False, True])
def test_a_checkpoint_and_config_from_before_method_state_resume(align, toy_config, tmp_path):
  """Checkpoints from before method state (no such key) restore, the state
  fresh (FixMatch's alignment queue of one batch: as those runs computed
  it); their config.json, without align_batches, is the same config."""
  import flax
  from configs import fixmatch as fixmatch_config
  from mnist_ten import checkpoint, optim, train
  from mnist_ten import config as config_lib
  toy_config = _stateful(toy_config, "fixmatch")
  toy_config.fixmatch.align = align
  setup = train.Setup(toy_config)
  tx, _ = optim.for_config(toy_config)
  state = train.init_state(setup.model, tx, toy_config, setup.dataset.image_shape, setup.mesh,
                           setup.method.init_state(int(setup.split.unlabeled.size)))
  assert bool(jax.tree.leaves(state.method_state)) == align
  old = flax.serialization.to_state_dict(state)
  del old["method_state"]
  ckpt = checkpoint.Checkpointer(tmp_path)
  ckpt.save(3, old)
  ckpt.wait()
  restored, extra = ckpt.restore(state, fill_missing=("method_state",))
  assert extra["step"] == 3 and extra["filled"] == ["method_state"]
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match="method_state"):  # only the named fields may be missing
    ckpt.restore(state)
  saved = json.loads(config_lib.to_json(fixmatch_config.get_config("align")))
  del saved["fixmatch"]["align_batches"], saved["fixmatch"]["weak_pass"]
  current = fixmatch_config.get_config("align").to_dict()
  assert config_lib.differences(config_lib.from_saved(saved).to_dict(), current) == []


@pytest.mark.parametrize("name", ["flexmatch", "freematch", "softmatch"])
def test_configs_build_their_method_with_fixmatch_budget(name):
  import importlib
  from configs import fixmatch as fixmatch_config
  from mnist_ten import methods
  config = importlib.import_module(f"configs.{name}").get_config()
  base = fixmatch_config.get_config()
  assert config.method == name and config.num_steps == base.num_steps == 2000
  assert config.augment.to_dict() == base.augment.to_dict()
  assert config.batch_size == base.batch_size and config.fixmatch.mu == base.fixmatch.mu
  method = methods.build(config, methods.Context(num_classes=10, hflip_allowed=False))
  state = method.init_state(100)
  assert jax.tree.leaves(state)
  assert json.dumps(config.to_dict())  # saved as config.json
