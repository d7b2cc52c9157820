import jax.numpy as jnp
import numpy as np
import pytest

from mnist_ten.methods import knn


def test_knn_predicts_the_nearest_labeled_example():
  train_x = jnp.asarray([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
  train_y = jnp.asarray([0, 1, 2])
  query = jnp.asarray([[1.0, 1.0], [9.0, 1.0], [1.0, 8.0], [6.0, 0.0]])
  pred = knn.knn_predict(train_x, train_y, query, k=1, num_classes=3)
  np.testing.assert_array_equal(pred, [0, 1, 2, 1])


def test_knn_majority_vote():
  train_x = jnp.asarray([[0.0], [1.0], [1.5], [10.0]])
  train_y = jnp.asarray([0, 1, 1, 0])
  # Nearest is class 0, but 2 of the 3 nearest are class 1.
  pred = knn.knn_predict(train_x, train_y, jnp.asarray([[0.4]]), k=3, num_classes=2)
  assert int(pred[0]) == 1


def _fixmatch(threshold):
  from configs import fixmatch as fixmatch_config
  from mnist_ten import methods
  config = fixmatch_config.get_config()
  config.batch_size, config.fixmatch.mu, config.fixmatch.threshold = 4, 2, threshold
  return methods.build(config, methods.Context(num_classes=3, hflip_allowed=False))


def _batches():
  import jax
  from mnist_ten.input_pipeline import Batch
  images = jax.random.uniform(jax.random.key(0), (12, 28, 28, 1))
  return Batch(images[:4], jnp.asarray([0, 1, 2, 0])), Batch(images[4:])


def test_fixmatch_batch_shapes_and_mask():
  import jax
  seen = []

  def forward(params, images, train=True, output="logits"):
    seen.append(images.shape)
    # Confident class 1 on every image: the weak view's pseudo-label is 1.
    return jnp.tile(jnp.asarray([[0.0, params, 0.0]]), (images.shape[0], 1)), {}

  labeled, unlabeled = _batches()
  method = _fixmatch(threshold=0.95)
  assert method.images_per_step == 4 + 2 * 8
  loss, metrics, _ = method.loss(jnp.float32(10.0), forward=forward, labeled=labeled,
                                 unlabeled=unlabeled, rng=jax.random.key(1), step=0)
  assert seen == [(20, 28, 28, 1)]  # one forward pass over labeled + weak + strong
  assert float(metrics["mask_rate"]) == 1.0
  assert float(metrics["loss/unsupervised"]) < 1e-3
  _, metrics, _ = _fixmatch(threshold=1.01).loss(
      jnp.float32(10.0), forward=forward, labeled=labeled, unlabeled=unlabeled,
      rng=jax.random.key(1), step=0)
  assert float(metrics["mask_rate"]) == 0.0 and float(metrics["loss/unsupervised"]) == 0.0


def _mixmatch(mixup):
  from configs import mixmatch as mixmatch_config
  from mnist_ten import methods
  config = mixmatch_config.get_config("" if mixup else "nomixup")
  config.batch_size, config.mixmatch.mu = 4, 2
  return methods.build(config, methods.Context(num_classes=3, hflip_allowed=False))


@pytest.mark.parametrize("mixup", [True, False])
def test_mixmatch_guesses_sharpened_labels(mixup):
  import jax
  seen = []

  def forward(params, images, train=True, output="logits"):
    seen.append(images.shape[0])
    return jnp.tile(jnp.asarray([[0.0, params, 0.0]]), (images.shape[0], 1)), {}

  labeled, unlabeled = _batches()
  method = _mixmatch(mixup)
  loss, metrics, _ = method.loss(jnp.float32(1.0), forward=forward, labeled=labeled,
                                 unlabeled=unlabeled, rng=jax.random.key(0), step=10_000)
  assert seen == [2 * 8, 4 + 2 * 8]  # the guessing pass, then the training pass
  assert method.images_per_step == sum(seen)
  assert float(metrics["lambda_u"]) == 75.0  # ramped up fully
  # The guess sharpens the constant prediction softmax([0, 1, 0]) towards class 1.
  p = np.exp([0.0, 1.0, 0.0]) / np.exp([0.0, 1.0, 0.0]).sum()
  np.testing.assert_allclose(metrics["guess_confidence"], p[1], rtol=1e-5)
  assert np.isfinite(float(loss))


def test_pretext_transforms_are_eight_distinct_invertible_maps():
  from mnist_ten.methods import pretext
  image = jnp.arange(16.0).reshape(1, 4, 4, 1)
  outs = [pretext.transform(image, jnp.asarray([t]))[0] for t in range(8)]
  flat = {tuple(np.asarray(o).ravel()) for o in outs}
  assert len(flat) == 8
  np.testing.assert_array_equal(outs[0], image[0])
  np.testing.assert_array_equal(outs[1], jnp.rot90(image[0], 1, axes=(0, 1)))
  np.testing.assert_array_equal(outs[4], image[0, :, ::-1])
