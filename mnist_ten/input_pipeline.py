"""Training data kept on the accelerator and sampled inside the jit-compiled step.

The labeled examples are copied to every device; the unlabeled images (and
any pseudo-labels) are split over the mesh's devices, so with several hosts
each process holds only its share. A step's gather from them is one XLA
collective, and draws the same batch whatever the number of devices.

`TrainData` holds the labeled images with their labels and the unlabeled
images *without* labels: the unlabeled set's labels never reach the trainer,
because this is the only object it receives. Test and validation sets, which
have labels, go to the evaluator alone (`EvalSet`).
"""
from typing import NamedTuple, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np

from mnist_ten import parallel
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
  # The true U: on a mesh the arrays above are padded to a multiple of the
  # device count, and the padding rows are never drawn.
  num_unlabeled: Optional[int] = flax.struct.field(pytree_node=False, default=None)


class EvalSet(NamedTuple):
  name: str
  images: jax.Array  # uint8, on device
  labels: np.ndarray  # on the host, for metrics
  host_images: np.ndarray  # the same images on the host (for `Method.vote`)
  # Bags only: each bag's instance labels [N, L] (-1: padding), for scoring.
  instance_labels: Optional[np.ndarray] = None


class Batch(NamedTuple):
  images: jax.Array  # float32 in [0, 1], sharded over the mesh's 'data' axis
  labels: jax.Array = None  # None for unlabeled batches
  pseudo_labels: jax.Array = None   # unlabeled batches, when the data holds them
  pseudo_weights: jax.Array = None
  # Unlabeled batches: each image's row in the unlabeled set (int32), for a
  # method's per-image state (FlexMatch's last confident prediction).
  indices: jax.Array = None


def host_train_data(dataset: Dataset, split: Split) -> TrainData:
  """The trainer's data as numpy arrays on the host: what a method's
  `prepare` sees (every process has all of it)."""
  return TrainData(
      labeled_images=dataset.train_images[split.labeled],
      labeled_labels=dataset.train_labels[split.labeled].astype(np.int32),
      unlabeled_images=dataset.train_images[split.unlabeled])


def to_device(data: TrainData, mesh) -> TrainData:
  """Host `TrainData` -> on the mesh: labeled examples replicated, unlabeled
  images and pseudo-labels split over the devices (padded to a multiple of
  their number). With mesh=None, plain arrays on the default device."""
  n = data.unlabeled_images.shape[0]
  multiple = mesh.size if mesh is not None else 1

  def split_over_devices(array):
    if array is None:
      return None
    return parallel.put_sharded(parallel.pad_to_multiple(np.asarray(array), multiple), mesh)
  return TrainData(
      labeled_images=parallel.put_replicated(data.labeled_images, mesh),
      labeled_labels=parallel.put_replicated(data.labeled_labels, mesh),
      unlabeled_images=split_over_devices(data.unlabeled_images),
      pseudo_labels=split_over_devices(data.pseudo_labels),
      pseudo_weights=split_over_devices(data.pseudo_weights),
      num_unlabeled=n)


def make_train_data(dataset: Dataset, split: Split, mesh=None) -> TrainData:
  return to_device(host_train_data(dataset, split), mesh)


def make_eval_sets(dataset: Dataset, split: Split, mesh):
  sets = [EvalSet("test", parallel.put_replicated(dataset.test_images, mesh),
                  dataset.test_labels, dataset.test_images, dataset.test_instance_labels)]
  if split.validation.size:
    val_images = dataset.train_images[split.validation]
    sets.append(EvalSet("val", parallel.put_replicated(val_images, mesh),
                        dataset.train_labels[split.validation], val_images))
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
    size = data.num_unlabeled or data.unlabeled_images.shape[0]
    idx = jax.random.randint(k_unl, (unlabeled_size,), 0, size)
    images = _take(data.unlabeled_images, idx, sharding)
    unlabeled = Batch(images, indices=jax.lax.with_sharding_constraint(idx, sharding))
    if data.pseudo_labels is not None:
      unlabeled = unlabeled._replace(pseudo_labels=_gather(data.pseudo_labels, idx, sharding),
                                     pseudo_weights=_gather(data.pseudo_weights, idx, sharding))
  return labeled, unlabeled
