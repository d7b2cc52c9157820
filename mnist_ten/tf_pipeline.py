"""The tf.data input pipeline (`data.pipeline="tfdata"`) for the
labeled/unlabeled split.

Two streams, built with tf.data from the host's arrays: the labeled examples
with their labels, and the unlabeled images (with any pseudo-labels a
method's `prepare` computed from images) without labels. Each is a seeded
shuffle, repeated and cut into batches of the sizes the method asks for,
a pure function of (seed, step): batch s holds the elements
[s * B, (s + 1) * B) of the endless concatenation of one permutation of the
set per epoch (epoch e's drawn from [seed, stream, e]). So a resumed run
starts at its checkpoint's step and reads the same batches (it skips the
earlier batches' indices, reading none of their images). Batches are turned into numpy with
`tfds.as_numpy`, each process builds only its own slice of every global
batch, and the slices go onto the mesh with the step's sharding, a few
steps ahead of the step (the device never waits while the host has one
ready). TensorFlow is imported only here, only when this pipeline is chosen.

The default pipeline, `device`, keeps the arrays on the accelerator and
samples inside the step (`input_pipeline.sample`): fastest where the data
fit in device memory.
"""
import collections
import functools
import itertools
from typing import Callable, Iterator, Optional

import jax
import numpy as np

from mnist_ten import augment
from mnist_ten import input_pipeline
from mnist_ten import parallel
from mnist_ten.errors import ConfigError
from mnist_ten.registry import Registry

PIPELINES = ("device", "tfdata")
LABELED, UNLABELED = 0, 1  # the streams' seeds differ by this

# Host-side augmentation of the uint8 batches with tf ops (data.host_augment),
# before the method's own on-device augmentation: name -> factory(**options)
# -> op(tf, images [b, H, W, C], seed [2], batch, rows). An op draws its
# randomness for the whole global batch of `batch` and keeps this process's
# `rows` of it (a slice), so an image is augmented alike whatever the number
# of processes.
HOST_OPS: Registry = Registry("host augmentation")


@HOST_OPS.register("hflip")
def host_hflip():
  """Random horizontal flip per image; dropped where flips change the label,
  as on the device (data.hflip)."""

  def op(tf, images, seed, batch, rows):
    flip = tf.random.stateless_uniform([batch], seed)[rows] < 0.5
    return tf.where(flip[:, None, None, None], tf.reverse(images, [2]), images)
  return op


@HOST_OPS.register("crop")
def host_crop(*, pad: int = 2):
  """Zero-pad by `pad` pixels and crop back at a random position per image."""
  if not isinstance(pad, int) or pad < 0:
    raise ConfigError(f"host augmentation crop: pad must be a whole number >= 0, got {pad!r}")

  def op(tf, images, seed, batch, rows):
    shape = tf.shape(images)
    offsets = tf.random.stateless_uniform([batch, 2], seed, minval=0, maxval=2 * pad + 1,
                                          dtype=tf.int32)[rows]
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    ys = offsets[:, :1] + tf.range(shape[1])[None]
    xs = offsets[:, 1:] + tf.range(shape[2])[None]
    return tf.gather(tf.gather(padded, ys, axis=1, batch_dims=1), xs, axis=2, batch_dims=1)
  return op


def host_augmenter(spec: str, *, hflip_allowed: bool) -> Optional[Callable]:
  """augment(tf, images, seed, batch, rows) applying `spec`'s host ops in order, or None."""
  ops = augment.build_ops(spec, HOST_OPS, hflip_allowed=hflip_allowed,
                          what="host augmentation")
  if not ops:
    return None

  def apply(tf, images, seed, batch, rows):
    for i, op in enumerate(ops):
      images = op(tf, images, tf.random.experimental.stateless_fold_in(seed, i), batch, rows)
    return images
  return apply


def check(config):
  pipeline = config.data.get("pipeline", "device")
  if pipeline not in PIPELINES:
    raise ConfigError(f"data.pipeline must be one of {', '.join(PIPELINES)}, got {pipeline!r}")
  host = config.data.get("host_augment", "")
  if host:
    if pipeline != "tfdata":
      raise ConfigError(f"data.host_augment={host!r} runs in the tf.data pipeline: set "
                        "data.pipeline='tfdata' too (the device pipeline augments on the "
                        "device only, through the method's augment.* pipelines)")
    host_augmenter(host, hflip_allowed=True)  # known ops and options, before anything runs
  if pipeline == "tfdata":
    try:
      import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
    except ImportError as e:
      raise ConfigError(f"data.pipeline='tfdata' needs TensorFlow ({e}); install "
                        "tensorflow-cpu, or use data.pipeline='device'") from None


def process_rows(size: int, *, process: int, count: int) -> slice:
  """The rows of a global batch of `size` that process `process` of `count`
  reads: consecutive shares, in process order, as the mesh lays them out."""
  if size % count:
    raise ConfigError(f"batch of {size} must divide over {count} processes")
  share = size // count
  return slice(process * share, (process + 1) * share)


def _stream(tf, arrays, *, batch: int, seed: int, stream: int, start: int, stop: int,
            per_step: int, local: slice, host_augment: Optional[Callable] = None):
  """tf.data of dicts of this process's rows of each step's batch, `per_step`
  steps stacked (steps_per_dispatch): the endless concatenation of one
  permutation of the set per epoch (epoch e's from the stateless seed
  [seed, stream * 2^20 + e]), cut into batches; step s is batch s, so a
  resumed run skips `start` batches of indices (no image is read for them).
  `host_augment` draws from the seed [seed + 2^32, stream * 2^40 + step] for
  the whole global batch: a function of (seed, step) alone, so resume stays
  exact and each image is augmented alike over any number of processes."""
  size = int(next(iter(arrays.values())).shape[0])
  tensors = {k: tf.constant(v) for k, v in arrays.items()}

  def epoch(e):
    key = tf.stack([tf.constant(seed, tf.int64), stream * (1 << 20) + e])
    return tf.data.Dataset.from_tensor_slices(
        tf.argsort(tf.random.stateless_uniform([size], seed=key)))

  def gather(idx, step):
    idx = idx[local]
    out = {k: tf.gather(v, idx) for k, v in tensors.items()}
    if host_augment is not None:
      key = tf.stack([tf.constant(seed + (1 << 32), tf.int64), stream * (1 << 40) + step])
      out["images"] = host_augment(tf, out["images"], key, batch, local)
    return out
  indices = (tf.data.Dataset.range(1 << 40).flat_map(epoch)  # shuffled, repeated
             .batch(batch, drop_remainder=True)
             .skip(start).take(stop - start))
  ds = tf.data.Dataset.zip((indices, tf.data.Dataset.range(start, stop))).map(
      gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  if per_step > 1:
    ds = ds.batch(per_step, drop_remainder=True)
  return ds


def batches(host_data: input_pipeline.TrainData, *, labeled_size: int, unlabeled_size: int,
            seed: int, start: int, stop: int, per_step: int, mesh,
            prefetch: int = 2, host_augment: str = "", hflip_allowed: bool = False) -> Iterator:
  """Steps `start`..`stop` - 1 as (labeled, unlabeled) pairs of uint8
  `input_pipeline.Batch`es on the mesh ([per_step, B, ...] when per_step > 1),
  `prefetch` steps ahead on the device; both streams' images go through the
  host ops of `host_augment` (data.host_augment) first."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")  # tf.data runs on the host; the accelerator is JAX's
  local = functools.partial(process_rows, process=jax.process_index(),
                            count=jax.process_count())
  host = dict(host_augment=host_augmenter(host_augment, hflip_allowed=hflip_allowed))
  steps = range(start, stop, per_step)
  labeled = _stream(tf, {"images": np.asarray(host_data.labeled_images),
                         "labels": np.asarray(host_data.labeled_labels, np.int32)},
                    batch=labeled_size, seed=seed, stream=LABELED, start=start, stop=stop,
                    per_step=per_step, local=local(labeled_size), **host)
  datasets = [labeled]
  if unlabeled_size:
    # Images only, and what `prepare` derived from them: no label of an unlabeled image.
    arrays = {"images": np.asarray(host_data.unlabeled_images),
              "indices": np.arange(host_data.unlabeled_images.shape[0], dtype=np.int32)}
    if host_data.pseudo_labels is not None:
      arrays["pseudo_labels"] = np.asarray(host_data.pseudo_labels, np.int32)
      arrays["pseudo_weights"] = np.asarray(host_data.pseudo_weights, np.float32)
    datasets.append(_stream(tf, arrays, batch=unlabeled_size, seed=seed, stream=UNLABELED,
                            start=start, stop=stop, per_step=per_step,
                            local=local(unlabeled_size), **host))
  joined = tf.data.Dataset.zip(tuple(datasets)).prefetch(tf.data.AUTOTUNE)
  sharding = parallel.batch_sharded(mesh)
  stacked = None if per_step == 1 else jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec(None, "data"))

  def to_device(array, global_batch):
    target = sharding if per_step == 1 else stacked
    shape = ((global_batch,) if per_step == 1 else (per_step, global_batch)) + array.shape[
        (1 if per_step == 1 else 2):]
    return jax.make_array_from_process_local_data(target, array, shape)

  def put(pair):
    lab = pair[0]
    out = [input_pipeline.Batch(to_device(lab["images"], labeled_size),
                                to_device(lab["labels"], labeled_size))]
    if unlabeled_size:
      unl = pair[1]
      out.append(input_pipeline.Batch(
          to_device(unl["images"], unlabeled_size),
          pseudo_labels=(to_device(unl["pseudo_labels"], unlabeled_size)
                         if "pseudo_labels" in unl else None),
          pseudo_weights=(to_device(unl["pseudo_weights"], unlabeled_size)
                          if "pseudo_weights" in unl else None),
          indices=to_device(unl["indices"], unlabeled_size)))
    else:
      out.append(None)
    return tuple(out)

  source = (put(pair) for pair in tfds.as_numpy(joined))
  queue = collections.deque(itertools.islice(source, prefetch))
  for _ in steps:
    ready = queue.popleft()
    queue.extend(itertools.islice(source, 1))  # the next one goes onto the device meanwhile
    yield ready


def to_float(batch: Optional[input_pipeline.Batch]):
  """A fed uint8 batch as the methods see batches: float32 images in [0, 1]."""
  if batch is None:
    return None
  return batch._replace(images=batch.images.astype(np.float32) / 255.0)
