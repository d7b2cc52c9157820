"""A run's parts, built one way from a config (before training) or from a
finished workdir (for inference, plots, the next round), and the one loader
of a checkpoint's weights.
"""
import dataclasses
import json
import pathlib
from typing import Any, Dict, Optional

import jax
import ml_collections
import numpy as np

from mnist_ten import checkpoint
from mnist_ten import config as config_lib
from mnist_ten import datasets
from mnist_ten import methods
from mnist_ten import models
from mnist_ten import parallel
from mnist_ten import shares
from mnist_ten import splits
from mnist_ten import tf_pipeline
from mnist_ten.errors import ConfigError, WorkdirError


@dataclasses.dataclass
class Parts:
  """Config, data, split, method and model of one run (one stage)."""
  config: ml_collections.ConfigDict
  method: methods.Method
  model: Any  # models.Classifier, None for a method that does not train
  num_classes: int
  image_shape: tuple
  _dataset: Optional[datasets.Dataset] = None
  _split: Optional[splits.Split] = None
  _split_json: Optional[dict] = None
  class_names: tuple = ()  # when the data names its classes (image folders)

  def class_label(self, c: int) -> str:
    return shares.class_label(c, self.class_names)

  @property
  def dataset(self) -> datasets.Dataset:
    """Loaded on first use: a classifier without a vote needs no data."""
    if self._dataset is None:
      self._dataset = datasets.load(self.config.data)
    return self._dataset

  @property
  def split(self) -> splits.Split:
    if self._split is None:
      self._split = splits.Split.from_json(self._split_json,
                                           self.dataset.train_labels.shape[0])
    return self._split

  @classmethod
  def from_config(cls, config, dataset: datasets.Dataset = None) -> "Parts":
    """Everything checked before anything is written to the workdir. What
    follows from the data is resolved into `config` in place, so that its
    saved copy rebuilds the run: the steps of `num_epochs`, the input
    statistics of `data.standardize`."""
    dataset = dataset or datasets.load(config.data)
    if config.data.get("labeled_file"):
      # Resolved into the config, so that its saved copy rebuilds the split.
      indices = splits.read_labeled_file(config.data.labeled_file, config.data.labeled_count)
      if config.data.labeled_indices and tuple(config.data.labeled_indices) != indices:
        raise ConfigError("set data.labeled_indices or data.labeled_file, not both")
      with config.unlocked():
        config.data.labeled_indices = indices
    split = splits.make_split(
        dataset.train_labels, dataset.num_classes,
        labels_per_class=config.data.labels_per_class,
        label_seed=config.data.label_seed,
        labeled_indices=tuple(config.data.labeled_indices),
        validation_size=config.data.validation_size,
        num_unlabeled=config.data.num_unlabeled)
    config_lib.resolve_epochs(config, split.labeled.size)
    _check_bags(config, dataset)
    tf_pipeline.check(config)
    if config.data.standardize and "standardize" not in config.model:
      with config.unlocked():
        config.model.standardize = _train_statistics(dataset, split)
    config_lib.validate(config)
    ctx = methods.Context(num_classes=dataset.num_classes,
                          hflip_allowed=datasets.hflip_allowed(config.data),
                          image_shape=dataset.image_shape)
    method = methods.build(config, ctx)
    model = models.build(config.model, dataset.num_classes, aux_widths=method.aux_widths,
                         frozen_encoder=config.freeze_encoder) if method.trains else None
    return cls(config, method, model, dataset.num_classes, dataset.image_shape,
               _dataset=dataset, _split=split, class_names=tuple(dataset.class_names or ()))

  @classmethod
  def from_workdir(cls, workdir) -> "Parts":
    """The parts of the run in `workdir`, from its config.json and split.json;
    the data are loaded only when used."""
    workdir = pathlib.Path(workdir)
    if not (workdir / "config.json").exists():
      raise WorkdirError(f"{str(workdir)!r} holds no run (no config.json)")
    config = config_lib.from_saved(json.loads((workdir / "config.json").read_text()))
    split = json.loads((workdir / "split.json").read_text())
    num_classes, image_shape = split["num_classes"], tuple(split["image_shape"])
    method = methods.build(config, methods.Context(num_classes, hflip_allowed=False,
                                                   image_shape=image_shape))
    model = models.build(config.model, num_classes,
                         aux_widths=method.aux_widths) if method.trains else None
    return cls(config, method, model, num_classes, image_shape, _split_json=split,
               class_names=tuple(split.get("class_names", ())))

  def check_batches(self, mesh):
    """Batch sizes that the mesh divides, and unlabeled images where needed."""
    if not self.method.trains:
      return
    for name, size in [("batch size", self.method.labeled_batch_size),
                       ("unlabeled batch size", self.method.unlabeled_batch_size),
                       ("eval_batch_size", self.config.eval_batch_size)]:
      parallel.check_divisible(name, size, mesh)
    if self.method.unlabeled_batch_size and not self.split.unlabeled.size:
      raise ConfigError(f"method {self.config.method!r} needs unlabeled images but every "
                        "train image is labeled or held out")


def _check_bags(config, dataset):
  """Bags and the bag model go together, and a frozen instance encoder is a
  pretrained one."""
  bags, mil = datasets.is_bags(dataset), config.model.name == "mil"
  if bags and not mil:
    raise ConfigError(f"data.bags makes bags of instances; model {config.model.name!r} takes "
                      "single images: use model.name='mil' (configs/mil.py)")
  if mil and not bags:
    raise ConfigError("model 'mil' takes bags of instances: set data.bags (configs/mil.py)")
  if bags and config.data.standardize:
    raise ConfigError("data.standardize does not apply to bags (their padding and mask "
                      "channel would enter the statistics); leave it False")
  if mil and (config.model.get("freeze_instance") or config.init_scope == "instance") and (
      not config.init_from):
    raise ConfigError("model mil with freeze_instance (or init_scope='instance') needs "
                      "--config.init_from=WORKDIR, the run whose encoder becomes the "
                      "instance encoder; without it a random encoder would stay frozen")


def _train_statistics(dataset, split) -> list:
  """[mean, std] of the train images the run may see (labeled and unlabeled,
  not the held-out or test ones), as floats in [0, 1] pixels: no label is read."""
  seen = np.sort(np.concatenate([split.labeled, split.unlabeled]))  # the same sums for one set
  pixels = dataset.train_images[seen].astype(np.float64) / 255.0
  return [float(pixels.mean()), max(float(pixels.std()), 1e-6)]


def _open_checkpoints(workdir) -> checkpoint.Checkpointer:
  """The workdir's checkpoints, read-only, refused unless one is complete."""
  ckpt_dir = pathlib.Path(workdir) / "checkpoints"
  if not ckpt_dir.is_dir():
    raise WorkdirError(f"{str(workdir)!r} holds no checkpoints/ folder")
  ckpt = checkpoint.Checkpointer(ckpt_dir, read_only=True)
  if ckpt.latest_step() is None:
    ckpt.close()
    raise WorkdirError(f"{str(workdir)!r} holds no complete checkpoint yet")
  return ckpt


def latest_step(workdir) -> int:
  """The step of the workdir's newest complete checkpoint."""
  ckpt = _open_checkpoints(workdir)
  try:
    return ckpt.latest_step()
  finally:
    ckpt.close()


def check_weights(workdir):
  """Raises the WorkdirError `load_weights` would, without reading any weights."""
  _open_checkpoints(workdir).close()


def load_weights(workdir, *, use_ema: bool = True, with_step: bool = False):
  """The newest readable checkpoint's weights as host arrays: {"params": ...,
  and "batch_stats" when the model has them}; the EMA weights by default (the
  run's final model, when it kept them). with_step: (weights, its step)."""
  ckpt = _open_checkpoints(workdir)
  try:
    saved, step = ckpt.read()
  finally:
    ckpt.close()
  raw = saved["state"]
  # Through numpy: a checkpoint of a multi-device run comes back spread over
  # that run's devices; callers place the weights where they need them.
  variables = {"params": raw["ema_params" if use_ema else "params"]}
  if raw.get("batch_stats"):
    variables["batch_stats"] = raw["batch_stats"]
  variables = jax.tree.map(np.asarray, variables)
  return (variables, step) if with_step else variables
