"""Training data kept on the accelerator and sampled inside the jit-compiled step.

`TrainData` holds the labeled images with their labels and the unlabeled
images *without* labels: the unlabeled set's labels never reach the trainer,
because this is the only object it receives. Test and validation sets, which
have labels, go to the evaluator alone (`EvalSet`).
"""
from typing import NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np

from mnist_ten.datasets import Dataset
from mnist_ten.splits import Split


@flax.struct.dataclass
class TrainData:
  labeled_images: jax.Array    # uint8 [L, H, W, C]
  labeled_labels: jax.Array    # int32 [L]
  unlabeled_images: jax.Array  # uint8 [U, H, W, C], no labels by construction
  # Set by a method's `prepare` (e.g. graph propagation from the labeled
  # examples): a guess per unlabeled image and its weight in the loss. They
  # are computed from images and the labeled examples only.
  pseudo_labels: jax.Array = None   # int32 [U]
  pseudo_weights: jax.Array = None  # float32 [U]


class EvalSet(NamedTuple):
  name: str
  images: jax.Array  # uint8, on device
  labels: np.ndarray  # on the host, for metrics


class Batch(NamedTuple):
  images: jax.Array  # float32 in [0, 1], sharded over the mesh's 'data' axis
  labels: jax.Array = None  # None for unlabeled batches
  pseudo_labels: jax.Array = None   # unlabeled batches, when the data holds them
  pseudo_weights: jax.Array = None


def make_train_data(dataset: Dataset, split: Split, sharding) -> TrainData:
  return jax.device_put(TrainData(
      labeled_images=dataset.train_images[split.labeled],
      labeled_labels=dataset.train_labels[split.labeled].astype(np.int32),
      unlabeled_images=dataset.train_images[split.unlabeled]), sharding)


def make_eval_sets(dataset: Dataset, split: Split, sharding):
  sets = [EvalSet("test", jax.device_put(dataset.test_images, sharding),
                  dataset.test_labels)]
  if split.validation.size:
    sets.append(EvalSet("val", jax.device_put(dataset.train_images[split.validation],
                                              sharding),
                        dataset.train_labels[split.validation]))
  return sets


def _gather(values, idx, sharding):
  return jax.lax.with_sharding_constraint(values[idx], sharding)


def _take(images, idx, sharding):
  batch = jnp.take(images, idx, axis=0).astype(jnp.float32) / 255.0
  return jax.lax.with_sharding_constraint(batch, sharding)


def sample(data: TrainData, rng, *, labeled_size: int, unlabeled_size: int, sharding):
  """Draws a labeled and an unlabeled batch uniformly with replacement.

  Sampling with replacement keeps every step a pure function of (data, rng):
  no epoch state to checkpoint, and a resumed run draws the same batches.
  """
  k_lab, k_unl = jax.random.split(rng)
  idx = jax.random.randint(k_lab, (labeled_size,), 0, data.labeled_images.shape[0])
  labeled = Batch(_take(data.labeled_images, idx, sharding),
                  _gather(data.labeled_labels, idx, sharding))
  unlabeled = None
  if unlabeled_size:
    idx = jax.random.randint(k_unl, (unlabeled_size,), 0, data.unlabeled_images.shape[0])
    images = _take(data.unlabeled_images, idx, sharding)
    if data.pseudo_labels is None:
      unlabeled = Batch(images)
    else:
      unlabeled = Batch(images, pseudo_labels=_gather(data.pseudo_labels, idx, sharding),
                        pseudo_weights=_gather(data.pseudo_weights, idx, sharding))
  return labeled, unlabeled
