"""Training methods, registered by name and chosen by `config.method`.

A method is a class in its own module whose `loss` is a pure function:

    loss(params, *, forward, labeled, unlabeled, rng, step, state)
        -> (scalar loss, {name: scalar metric}, new batch statistics, new state)

`forward(params, images, train=True, output="logits") -> (outputs, batch_stats)`
runs the model (output: "logits", "features", "aux" for the auxiliary head
that the method's `aux_widths` asks for, or "all" for a dict of the three).
`labeled` is a `Batch(images, labels)`, `unlabeled` a `Batch(images)` without
labels (or None when the method asks for none). Images
arrive un-augmented in [0, 1]: the method augments the views it needs with
`ctx.augmenter(spec)`, and may show them (`views`) in the run's plots. The trainer stays generic: it samples the batches,
differentiates `loss`, applies the optimizer and EMA, logs every metric (a
metric set to NaN on a step counts as not measured there). A method may also
`vote` at prediction time (see `Method.vote`; `propagate` does, with its graph).

`state` is the method's own pytree (`Method.init_state`: e.g. an EMA of the
predicted class distribution, per-class thresholds, a prediction per
unlabeled image, indexed by `unlabeled.indices`), or None for a method that
keeps none (it returns it unchanged). The trainer carries it through the
jit-compiled step, replicated over the mesh, and checkpoints it with the
weights, so a resumed run continues with the same state. It is computed from
the model's outputs and the labeled examples only, never from a hidden label.
"""
import dataclasses
import importlib
from typing import Callable

from mnist_ten import augment
from mnist_ten import datasets
from mnist_ten.errors import ConfigError
from mnist_ten.registry import Registry

METHODS: Registry = Registry("method")


@dataclasses.dataclass(frozen=True)
class Context:
  """What a method may know about the data when it is built."""
  num_classes: int
  hflip_allowed: bool
  image_shape: tuple = (28, 28, 1)

  @property
  def points(self) -> bool:
    """The examples are 2-D points ([1, 1, 2] "images"), with nothing to augment."""
    return datasets.is_points(self.image_shape)

  @property
  def bags(self) -> bool:
    """The examples are bags of instances ([L, H, W, C + 1], datasets.pack_bags)."""
    return datasets.is_bags(self.image_shape)

  def augmenter(self, spec: str) -> Callable:
    if self.points and augment.parse(spec):
      raise ConfigError(f"augmentation {spec!r} needs images, and this dataset's examples are "
                        "2-D points: set the config.augment entries this method uses to ''")
    if self.bags and augment.parse(spec):
      # The ops see one [L, H, W, C + 1] array, mask channel included: refused, not mangled.
      raise ConfigError(f"augmentation {spec!r} does not apply to bags of instances "
                        "(data.bags): set the config.augment entries this method uses to ''")
    return augment.build(spec, hflip_allowed=self.hflip_allowed)


class Method:
  """Base class: set the batch sizes in __init__ and define `loss`."""
  trains = True  # False for non-parametric baselines (no optimizer, no steps)
  labeled_batch_size: int = 0
  unlabeled_batch_size: int = 0
  aux_widths: tuple = ()  # layer widths of the auxiliary head the method needs, if any
  votes: bool = False  # True when `vote` adds to the network's predictions
  # True when `prepare` needs the network of the run in `config.init_from`.
  uses_init_network: bool = False
  # True when the method is about views of images (rotations, augmented pairs):
  # refused for datasets of points.
  needs_images: bool = False

  def __init__(self, config, ctx: Context):
    self.config = config
    self.ctx = ctx

  @property
  def images_per_step(self) -> int:
    """Images that pass through the network per step (for images/s)."""
    return self.labeled_batch_size + self.unlabeled_batch_size

  def prepare(self, data, init_network=None):
    """Called once before training (and again on resume; it must be
    deterministic) with the host's `TrainData` (numpy arrays, all of them in
    every process): may return it with numpy `pseudo_labels`/`pseudo_weights`
    computed from the images and the labeled examples. The trainer then
    places everything on the devices. `init_network`: for a method with
    `uses_init_network`, the network of the run in `config.init_from` as an
    `inference.Classifier` (`features(images)`, `classifier(images)`),
    handed in by the trainer; else None."""
    return data

  def record(self) -> dict:
    """What `prepare` found that results.json keeps, e.g. the class shares of
    the pseudo-labels before size bounds moved them ({} by default)."""
    return {}

  def views(self, rng, labeled_images, unlabeled_images):
    """The views the method trains on, {name: float images in [0, 1]}, drawn
    as `loss` draws them (for the plots; a method may show none)."""
    return {}

  def samples(self, rng):
    """Random quantities the method draws in `loss` ({name: 1-D array}, e.g.
    mixup's lambda), for histograms in the plots."""
    return {}

  def init_state(self, num_unlabeled: int):
    """The method's state before step 0 (a pytree of arrays), or None."""
    del num_unlabeled
    return None

  def loss(self, params, *, forward, labeled, unlabeled, rng, step, state):
    raise NotImplementedError

  def vote(self, images):
    """Class votes [N, num_classes] (rows summing to 1) for uint8 host images
    [N, H, W, C], added to the network's probabilities wherever the run
    predicts (its evaluations, `load_classifier`); None: the network alone.
    Called after `prepare`, with what it computed."""
    return None


def build(config, ctx: Context) -> Method:
  cls = METHODS.get(config.method)
  if ctx.bags and config.method != "supervised":
    raise ConfigError(f"method {config.method!r} does not take bags of instances "
                      "(data.bags); bags train with method 'supervised' on their bag labels")
  if ctx.points and cls.needs_images:
    raise ConfigError(f"method {config.method!r} needs images (it learns from views of "
                      "them), and this dataset's examples are 2-D points: use supervised, "
                      "propagate, entropy_min, mixmatch, fixmatch (with config.augment "
                      "entries '') or knn")
  method = cls(config, ctx)
  if config.get("rotation_aux", {}).get("weight", 0.0):
    from mnist_ten.methods import pretext  # pylint: disable=g-import-not-at-top
    method = pretext.RotationAuxiliary(method, config, ctx)
  return method


# Importing a method's module registers it.
for _module in ("supervised", "knn", "fixmatch", "flexmatch", "freematch", "softmatch",
                "mixmatch", "pretext", "simclr", "propagate", "entropy_min"):
  importlib.import_module(f"mnist_ten.methods.{_module}")
