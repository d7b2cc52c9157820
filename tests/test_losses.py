import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnist_ten import losses


def test_cross_entropy_with_smoothing():
  logits = jnp.log(jnp.asarray([[0.7, 0.2, 0.1]]))
  np.testing.assert_allclose(losses.cross_entropy(logits, jnp.asarray([0])), -np.log(0.7),
                             rtol=1e-6)
  smoothed = losses.cross_entropy(logits, jnp.asarray([0]), label_smoothing=0.3)
  targets = np.array([0.8, 0.1, 0.1])
  np.testing.assert_allclose(smoothed, -(targets * np.log([0.7, 0.2, 0.1])).sum(), rtol=1e-6)


def test_sharpen():
  p = jnp.asarray([[0.6, 0.3, 0.1]])
  np.testing.assert_allclose(losses.sharpen(p, 1.0), p, rtol=1e-6)
  sharp = losses.sharpen(p, 0.5)
  np.testing.assert_allclose(sharp, np.array([[36, 9, 1]]) / 46, rtol=1e-6)
  assert float(losses.sharpen(p, 0.01)[0, 0]) > 0.999


def test_distribution_alignment_moves_the_mean_guess_to_the_target():
  # Every guess leans to class 0; aligned to a uniform target they no longer do.
  probs = jnp.asarray([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.7, 0.1, 0.2]])
  uniform = jnp.full((3,), 1 / 3)
  aligned = losses.distribution_alignment(probs, uniform)
  np.testing.assert_allclose(aligned.sum(-1), 1.0, rtol=1e-6)
  mean = probs.mean(0)
  np.testing.assert_allclose(aligned[0], probs[0] / mean / (probs[0] / mean).sum(), rtol=1e-6)
  assert np.ptp(np.asarray(aligned.mean(0))) < np.ptp(np.asarray(mean)) / 2
  # A batch already at the target is left as it is.
  balanced = jnp.asarray([[0.5, 0.25, 0.25], [0.25, 0.5, 0.25], [0.25, 0.25, 0.5]])
  np.testing.assert_allclose(losses.distribution_alignment(balanced, uniform), balanced,
                             rtol=1e-6)


def test_class_distribution():
  np.testing.assert_allclose(losses.class_distribution(jnp.asarray([0, 2, 2, 0]), 4),
                             [0.5, 0.0, 0.5, 0.0])


def test_top_class_share():
  labels = jnp.asarray([0, 1, 1, 2])
  assert float(losses.top_class_share(labels, None, 3)) == 0.5
  weights = jnp.asarray([1.0, 0.0, 0.0, 1.0])  # only the confident ones count
  assert float(losses.top_class_share(labels, weights, 3)) == 0.5
  assert float(losses.top_class_share(labels, jnp.asarray([0.0, 1.0, 1.0, 0.0]), 3)) == 1.0
  assert float(losses.top_class_share(labels, jnp.zeros(4), 3)) == 0.0


def test_confident_pseudo_labels_with_a_prior_are_aligned_first():
  logits = jnp.log(jnp.asarray([[0.6, 0.4], [0.7, 0.3]]))
  labels, _ = losses.confident_pseudo_labels(logits, 0.5)
  np.testing.assert_array_equal(labels, [0, 0])
  # Batch mean (0.65, 0.35) against a uniform prior: the first row turns to class 1.
  labels, mask = losses.confident_pseudo_labels(logits, 0.5, prior=jnp.asarray([0.5, 0.5]))
  np.testing.assert_array_equal(labels, [1, 0])
  np.testing.assert_array_equal(mask, [1.0, 1.0])


def test_confident_pseudo_labels_mask_and_no_gradient():
  logits = jnp.asarray([[5.0, 0.0, 0.0], [0.1, 0.0, 0.2]])
  labels, mask = losses.confident_pseudo_labels(logits, 0.95)
  np.testing.assert_array_equal(labels, [0, 2])
  np.testing.assert_array_equal(mask, [1.0, 0.0])
  grad = jax.grad(lambda l: losses.confident_pseudo_labels(l, 0.5)[1].sum())(logits)
  assert float(jnp.abs(grad).sum()) == 0.0


def test_confident_consistency_is_masked_cross_entropy_with_no_gradient_to_the_weak_view():
  weak = jnp.asarray([[5.0, 0.0, 0.0], [0.1, 0.0, 0.2]])
  strong = jnp.asarray([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
  loss, pseudo, mask = losses.confident_consistency(weak, strong, 0.95)
  np.testing.assert_array_equal(pseudo, [0, 2])
  np.testing.assert_array_equal(mask, [1.0, 0.0])
  # Only the confident first example counts, averaged over both.
  expected = -float(jax.nn.log_softmax(strong[0])[0]) / 2
  np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
  grad_weak = jax.grad(lambda w: losses.confident_consistency(w, strong, 0.95)[0])(weak)
  assert float(jnp.abs(grad_weak).sum()) == 0.0


def test_mixup_keeps_each_example_dominant():
  x = jnp.eye(8)
  y = jax.nn.one_hot(jnp.arange(8), 8)
  mx, my = losses.mixup(jax.random.key(0), x, y, alpha=0.75)
  np.testing.assert_allclose(mx, my)  # x and y are mixed with the same weights
  assert bool(jnp.all(jnp.diag(my) >= 0.5 - 1e-6))
  np.testing.assert_allclose(my.sum(1), 1.0, rtol=1e-6)


def test_nt_xent():
  z = jax.random.normal(jax.random.key(0), (16, 8))
  aligned = losses.nt_xent(z, z, temperature=0.1)
  shuffled = losses.nt_xent(z, jnp.roll(z, 1, axis=0), temperature=0.1)
  assert float(aligned) < float(shuffled)
  # Uniform similarities give log(2N - 1).
  zero = losses.nt_xent(jnp.ones((4, 3)), jnp.ones((4, 3)), temperature=1.0)
  np.testing.assert_allclose(zero, np.log(7), rtol=1e-5)


@pytest.mark.parametrize("step, length, expected", [(0, 10, 0.0), (5, 10, 0.5), (20, 10, 1.0),
                                                    (0, 0, 1.0)])
def test_linear_rampup(step, length, expected):
  assert float(losses.linear_rampup(step, length)) == pytest.approx(expected)


def test_entropy():
  np.testing.assert_allclose(losses.entropy(jnp.full((1, 4), 0.25)), [np.log(4)], rtol=1e-6)
  np.testing.assert_allclose(losses.entropy(jnp.asarray([[1.0, 0.0]])), [0.0], atol=1e-6)
