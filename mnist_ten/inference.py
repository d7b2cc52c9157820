"""Load a finished (or checkpointed) run and classify images:

    clf = mnist_ten.load_classifier("runs/supervised-...")
    labels, probs = clf(images)   # uint8 [N, 28, 28(, 1)] or floats in [0, 1]
    labels, probs = clf(pixels, scale=255)   # floats in [0, 255]
"""
import pathlib
from typing import Dict, Optional

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from mnist_ten import evaluate
from mnist_ten import input_pipeline
from mnist_ten import run
from mnist_ten.errors import InputError, WorkdirError


class Classifier:
  """Callable images -> (labels [N], probabilities [N, num_classes]) as numpy."""

  def __init__(self, probs_fn, image_shape, num_classes: int, features_fn=None, vote_fn=None,
               layers_fn=None, checkpoint: Optional[pathlib.Path] = None, class_names=()):
    self._probs = jax.jit(probs_fn)
    self._features = jax.jit(features_fn) if features_fn else None
    self._layers = jax.jit(layers_fn) if layers_fn else None
    self._vote = vote_fn  # host images in [0, 255] -> class votes, or None
    self.image_shape = tuple(image_shape)
    self.num_classes = num_classes
    self.checkpoint = checkpoint  # the checkpoint folder the weights came from
    # The classes' names, when the data has them (image folders); class c is class_names[c].
    self.class_names = tuple(class_names)

  def __call__(self, images, batch_size: int = 1000, scale: Optional[float] = None):
    """scale: the value of a white pixel in float `images` (255 for floats in
    [0, 255]); uint8 images need none, other floats must lie in [0, 1]."""
    images = self._as_float(images, scale)
    probs = self._batched(self._probs, images, batch_size)
    if self._vote is not None and len(probs):
      # As the run evaluated itself: the network's probabilities plus the
      # method's vote (halved, to stay a distribution).
      probs = (probs + self._vote(images * 255.0)) / 2.0
    return probs.argmax(-1), probs

  def features(self, images, batch_size: int = 1000,
               scale: Optional[float] = None) -> np.ndarray:
    """The encoder's features [N, D] (trained models only)."""
    if self._features is None:
      raise WorkdirError("a nearest-neighbour run has no encoder features")
    return self._batched(self._features, self._as_float(images, scale), batch_size)

  def layers(self, images, batch_size: int = 1000,
             scale: Optional[float] = None) -> Dict[str, np.ndarray]:
    """Every encoder layer's output, by module path (e.g. "encoder/Dense_0"),
    as [N, D]: dense outputs as they are (before any activation that follows),
    convolution and normalisation maps average-pooled to 2 x 2 cells first
    (trained models only)."""
    if self._layers is None:
      raise WorkdirError("a nearest-neighbour run has no encoder layers")
    return self._batched(self._layers, self._as_float(images, scale), batch_size)

  def _as_float(self, images, scale: Optional[float] = None) -> np.ndarray:
    """Checked images as float32 [N, H, W, C] in [0, 1]; sizes, channels and
    ranges named before anything is reshaped."""
    images = np.asarray(images)
    if len(self.image_shape) == 4:
      return self._bags_as_float(images, scale)
    h, w, c = self.image_shape
    expected = f"[N, {h}, {w}, {c}]" + (f" or [N, {h}, {w}]" if c == 1 else "")
    if images.dtype == bool or not (np.issubdtype(images.dtype, np.integer)
                                    or np.issubdtype(images.dtype, np.floating)):
      raise InputError(f"images must be numbers (uint8 pixels or floats), got dtype "
                       f"{images.dtype}")
    if images.ndim not in (3, 4) or (images.ndim == 3 and c != 1):
      raise InputError(f"images must be a batch {expected}, got shape {list(images.shape)}"
                       + ("; for one image add a batch axis (images[None])"
                          if images.ndim == len(self.image_shape) - (c == 1) else ""))
    if tuple(images.shape[1:3]) != (h, w):
      raise InputError(f"this run's model takes {h}x{w} images, these are "
                       f"{images.shape[1]}x{images.shape[2]}: resize them first")
    got_c = 1 if images.ndim == 3 else images.shape[3]
    if got_c != c:
      raise InputError(f"this run's model takes {c}-channel images, these have {got_c}"
                       + (": convert them to greyscale" if c == 1 else ""))
    if images.ndim == 3:
      images = images[..., None]  # [N, H, W] grey images
    return self._scaled(images, scale)

  @staticmethod
  def _scaled(images, scale):
    """Numbers as float32 in [0, 1]: uint8 pixels, floats over `scale`, or floats in [0, 1]."""
    if scale is not None:
      if not scale > 0:
        raise InputError(f"scale={scale!r} must be the positive value of a white pixel")
      images = images.astype(np.float32) / float(scale)
    elif np.issubdtype(images.dtype, np.integer):
      images = images.astype(np.float32) / 255.0
    if np.issubdtype(images.dtype, np.floating) and images.size and (
        np.nanmin(images) < 0.0 or np.nanmax(images) > 1.0):
      # Pixels in [0, 255] given as floats would be read as 255x too bright.
      raise InputError(
          f"float images must lie in [0, 1], these lie in [{np.nanmin(images):g}, "
          f"{np.nanmax(images):g}]" + (f" after dividing by scale={scale:g}" if scale else
                                      ": pass scale=255 for pixels in [0, 255], or uint8"))
    return np.asarray(images, np.float32)

  def _bags_as_float(self, bags, scale):
    """Packed bags (`datasets.pack_bags`) of any length L: [N, L, H, W, C + 1]."""
    instance = self.image_shape[1:]
    if bags.ndim != 5 or tuple(bags.shape[2:]) != tuple(instance):
      raise InputError(f"this run's model takes bags [N, L, {', '.join(map(str, instance))}] "
                       f"(datasets.pack_bags), got shape {list(bags.shape)}")
    if bags.dtype == bool or not (np.issubdtype(bags.dtype, np.integer)
                                  or np.issubdtype(bags.dtype, np.floating)):
      raise InputError(f"bags must be numbers (uint8 pixels or floats), got dtype {bags.dtype}")
    return self._scaled(bags, scale)

  def _batched(self, fn, images, batch_size):
    if not len(images):
      # No rows, but the output's structure and widths (a dict for
      # `layers`): those of one blank image.
      blank = jax.device_get(fn(jnp.zeros((1,) + self.image_shape, jnp.float32)))
      return jax.tree.map(lambda leaf: leaf[:0], blank)
    parts = [jax.device_get(fn(jnp.asarray(images[i:i + batch_size], jnp.float32)))
             for i in range(0, images.shape[0], batch_size)]
    # An array, or a dict of arrays (`layers`): each leaf joined over the batches.
    return jax.tree.map(lambda *leaves: np.concatenate(leaves), *parts)


def load_classifier(workdir, *, use_ema: bool = True, vote: bool = True,
                    mirror: bool = True) -> Classifier:
  """The latest checkpoint of the run in `workdir` as a `Classifier`.

  A run whose method votes with the network (`propagate.vote`) predicts as it
  was evaluated, network and vote together; the vote's graph is rebuilt from
  the run's data and split, as training built it (about a minute on a
  CPU). vote=False: the network alone, at once. A run that reports its `flip`
  evaluator averages each image with its mirror image, as evaluated;
  mirror=False: the images as given."""
  parts = run.Parts.from_workdir(workdir)
  method, num_classes, image_shape = parts.method, parts.num_classes, parts.image_shape
  if not method.trains:  # nearest neighbour: the labeled examples are the model
    dataset, labeled = parts.dataset, parts.split.labeled
    x, y = jnp.asarray(dataset.train_images[labeled]), jnp.asarray(dataset.train_labels[labeled])
    return Classifier(lambda images: jax.nn.one_hot(
        method.predict(x, y, images * 255.0), num_classes), image_shape, num_classes)
  # On this process's own device, whatever devices the run was spread over.
  variables, step = run.load_weights(workdir, use_ema=use_ema, with_step=True)
  variables = jax.device_put(variables)
  logging.info("classifier of %s: checkpoint %d (%s weights)", workdir, step,
               "EMA" if use_ema else "raw")
  model = parts.model
  vote_fn = None
  if vote and method.votes:
    prepare_method(parts)  # the vote's graph, as training built it
    vote_fn = method.vote
  averaged = mirror and evaluate.kinds(parts.config).get(
      evaluate.report_for(parts.config, method)) == "flip"

  def probs(images):
    out = jax.nn.softmax(model.apply(variables, images, train=False))
    if averaged:
      out = (out + jax.nn.softmax(model.apply(variables, evaluate.mirror(images),
                                              train=False))) / 2
    return out
  return Classifier(
      probs, image_shape, num_classes, checkpoint=pathlib.Path(workdir) / "checkpoints" / str(step),
      features_fn=lambda images: model.apply(variables, images, train=False,
                                             output="features"),
      vote_fn=vote_fn, layers_fn=lambda images: _encoder_layers(model, variables, images),
      class_names=parts.class_names)


def prepare_method(parts: run.Parts) -> input_pipeline.TrainData:
  """The method's `prepare` on the run's own data and split (the host's
  numpy arrays), handed the network of `config.init_from` when the method
  uses one: what training did before its first step."""
  init_network = (load_classifier(parts.config.init_from, vote=False)
                  if parts.method.uses_init_network else None)
  return parts.method.prepare(input_pipeline.host_train_data(parts.dataset, parts.split),
                              init_network)


def _encoder_layers(model, variables, images) -> Dict[str, jax.Array]:
  """The outputs of the encoder's modules ([N, D]; maps pooled to 2 x 2)."""
  _, state = model.apply(variables, images, train=False, output="features",
                         capture_intermediates=True, mutable=["intermediates"])
  layers = {}
  for path, value in jax.tree_util.tree_flatten_with_path(state["intermediates"])[0]:
    names = [getattr(key, "key", None) for key in path]
    names = [n for n in names if isinstance(n, str) and n != "__call__"]
    if not names or names[0] != "encoder" or value.ndim not in (2, 4):
      continue
    if value.ndim == 4:  # [N, H, W, C] -> the mean of each quarter of the map
      n, h, w, c = value.shape
      value = value[:, :h // 2 * 2, :w // 2 * 2].reshape(n, 2, h // 2, 2, w // 2, c)
      value = value.mean((2, 4)).reshape(n, 4 * c)
    layers["/".join(names)] = value
  return layers
