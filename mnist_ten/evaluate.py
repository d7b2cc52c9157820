"""Test-set evaluation: predictions on device, metrics on the host."""
from typing import Callable, Dict

import jax
import jax.numpy as jnp
import numpy as np

from mnist_ten import parallel
from mnist_ten.methods import knn


def classification_metrics(labels: np.ndarray, predictions: np.ndarray,
                           num_classes: int) -> Dict:
  """Accuracy, macro-F1, per-class accuracy (recall) and the confusion matrix
  (rows: true class, columns: predicted)."""
  confusion = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(confusion, (labels, predictions), 1)
  tp = np.diag(confusion).astype(np.float64)
  support = confusion.sum(1)
  predicted = confusion.sum(0)
  recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
  precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
  f1 = np.divide(2 * precision * recall, precision + recall,
                 out=np.zeros_like(tp), where=(precision + recall) > 0)
  present = support > 0
  return {"accuracy": float(tp.sum() / max(len(labels), 1)),
          "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
          "per_class_accuracy": recall.round(6).tolist(),
          "confusion": confusion.tolist()}


def make_predict(logits_fn: Callable, batch_size: int, sharding, argmax: bool = True) -> Callable:
  """Returns predict(variables, uint8 images on device) -> numpy class ids
  (or, with argmax=False, the raw outputs of logits_fn).

  `logits_fn(variables, float_images)` is evaluated in jit-compiled chunks of
  `batch_size` (the last one padded) sharded over the mesh; the outputs are
  gathered to every process.
  """
  gathered = None if sharding is None else parallel.replicated(sharding.mesh)

  @jax.jit
  def chunk_predict(variables, images):
    # Padded inside the step: with several processes, no array may mix the
    # mesh's devices with one process's own.
    images = jnp.pad(images, [(0, batch_size - images.shape[0])] + [(0, 0)] * (images.ndim - 1))
    if sharding is not None:
      images = jax.lax.with_sharding_constraint(images, sharding)
    out = logits_fn(variables, images.astype(jnp.float32) / 255.0)
    out = jnp.argmax(out, -1) if argmax else out
    return out if gathered is None else jax.lax.with_sharding_constraint(out, gathered)

  def predict(variables, images):
    n = images.shape[0]
    out = [np.asarray(chunk_predict(variables, images[i:i + batch_size]))
           for i in range(0, n, batch_size)]
    return np.concatenate(out)[:n]
  return predict


def make_knn_predict(features_fn: Callable, labeled_images, labeled_labels, num_classes: int,
                     batch_size: int, sharding) -> Callable:
  """Like make_predict, but each image takes the class of its nearest labeled
  example by cosine similarity of `features_fn(variables, float_images)`:
  how well an encoder separates classes before any head is trained."""
  features_predict = make_predict(
      lambda v, x: _normalise(features_fn(v, x)), batch_size, sharding, argmax=False)
  # On unit vectors the L2-nearest example is the cosine-nearest one. The
  # labeled features are an argument, not a constant: one compilation serves
  # every evaluation.
  nearest_predict = make_predict(
      lambda v_and_labeled, x: jax.nn.one_hot(knn.knn_predict(
          v_and_labeled[1], labeled_labels, _normalise(features_fn(v_and_labeled[0], x)),
          k=1, num_classes=num_classes), num_classes),
      batch_size, sharding)

  def predict(variables, images):
    # On the mesh, like the variables it goes with.
    labeled = parallel.put_replicated(features_predict(variables, labeled_images),
                                      sharding.mesh if sharding is not None else None)
    return nearest_predict((variables, labeled), images)
  return predict


def _normalise(x):
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True).clip(1e-12)
