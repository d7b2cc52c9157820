"""Test-set evaluation: predictions on device, metrics on the host."""
from typing import Callable, Dict

import jax
import jax.numpy as jnp
import numpy as np


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


def make_predict(logits_fn: Callable, batch_size: int, sharding) -> Callable:
  """Returns predict(variables, uint8 images on device) -> numpy class ids.

  `logits_fn(variables, float_images)` is evaluated in jit-compiled chunks of
  `batch_size` (padded at the end) sharded over the mesh.
  """

  @jax.jit
  def chunk_predict(variables, images):
    images = jax.lax.with_sharding_constraint(images, sharding)
    return jnp.argmax(logits_fn(variables, images.astype(jnp.float32) / 255.0), -1)

  def predict(variables, images):
    n = images.shape[0]
    padded = -(-n // batch_size) * batch_size
    if padded != n:
      images = jnp.concatenate(
          [images, jnp.zeros((padded - n,) + images.shape[1:], images.dtype)])
    out = [chunk_predict(variables, images[i:i + batch_size])
           for i in range(0, padded, batch_size)]
    return np.asarray(jnp.concatenate(out))[:n]
  return predict
