"""Which train images are labeled, which are held out, which are unlabeled.

The draw depends only on (train labels, labels_per_class, label_seed), through
numpy's PCG64 generator, so it is identical on every machine and JAX version.
"""
import dataclasses
import json
import numbers
import pathlib
from typing import Sequence

import numpy as np

from mnist_ten.errors import DataError


@dataclasses.dataclass(frozen=True)
class Split:
  labeled: np.ndarray     # indices into the train split, sorted by class draw order
  unlabeled: np.ndarray   # the train indices neither labeled nor held out (or a subset)
  validation: np.ndarray  # held-out indices whose labels serve monitoring only
  subset: bool = False    # `unlabeled` is a draw of them (data.num_unlabeled)

  def to_json(self) -> dict:
    out = {"labeled": self.labeled.tolist(), "validation": self.validation.tolist(),
           "num_unlabeled": int(self.unlabeled.size)}
    if self.subset:
      out["unlabeled"] = self.unlabeled.tolist()
    return out

  @classmethod
  def from_json(cls, record: dict, num_train: int) -> "Split":
    """The split that `to_json` wrote, for a train split of `num_train` images."""
    labeled = np.asarray(record["labeled"], np.int64)
    validation = np.asarray(record["validation"], np.int64)
    if "unlabeled" in record:
      return cls(labeled=labeled, unlabeled=np.asarray(record["unlabeled"], np.int64),
                 validation=validation, subset=True)
    taken = np.zeros(num_train, bool)
    taken[labeled] = True
    taken[validation] = True
    return cls(labeled=labeled, unlabeled=np.flatnonzero(~taken), validation=validation)


def draw_labeled(labels: np.ndarray, num_classes: int, labels_per_class: int,
                 seed: int, exclude: np.ndarray = None) -> np.ndarray:
  """For each class c in order, `labels_per_class` indices of class c without
  replacement from `np.random.default_rng(seed)` (the USB/FixMatch convention)."""
  rng = np.random.default_rng(seed)
  available = np.ones(labels.shape[0], bool)
  if exclude is not None:
    available[exclude] = False
  chosen = []
  for c in range(num_classes):
    candidates = np.flatnonzero((labels == c) & available)
    if labels_per_class > candidates.size:
      raise DataError(f"data.labels_per_class={labels_per_class} but class {c} has "
                      f"only {candidates.size} train images available")
    chosen.append(rng.choice(candidates, labels_per_class, replace=False))
  return np.concatenate(chosen).astype(np.int64)


def make_split(labels: np.ndarray, num_classes: int, *, labels_per_class: int,
               label_seed: int, labeled_indices: Sequence[int] = (),
               validation_size: int = 0, num_unlabeled: int = 0) -> Split:
  """num_unlabeled > 0 keeps a draw of that many unlabeled images (fast smoke
  runs, learning curves in the amount of unlabeled data); 0 keeps them all."""
  n = labels.shape[0]
  if isinstance(label_seed, bool) or not isinstance(label_seed, numbers.Integral) or label_seed < 0:
    raise DataError(f"data.label_seed={label_seed!r} must be a whole number >= 0 (it seeds "
                    "numpy's default_rng, which draws the labeled examples)")
  if validation_size < 0 or validation_size >= n:
    raise DataError(f"data.validation_size={validation_size} must be in [0, {n})")
  # The validation draw uses its own stream so that adding a validation set
  # changes which images are held out, not the stream used for the labels.
  # Rows without a label (an image folder's unlabeled rows, label -1) are
  # always unlabeled: never drawn as labeled examples or for validation.
  has_label = np.asarray(labels) >= 0
  pool = n if has_label.all() else np.flatnonzero(has_label)
  if validation_size and validation_size >= has_label.sum():
    raise DataError(f"data.validation_size={validation_size} must be below the "
                    f"{int(has_label.sum())} labeled train images")
  validation = np.sort(np.random.default_rng([label_seed, 1]).choice(
      pool, validation_size, replace=False)) if validation_size else np.zeros(0, np.int64)
  if len(labeled_indices):
    labeled = np.asarray(labeled_indices, np.int64)
    if labeled.ndim != 1 or labeled.min() < 0 or labeled.max() >= n:
      raise DataError(f"data.labeled_indices must be indices in [0, {n})")
    if np.unique(labeled).size != labeled.size:
      raise DataError("data.labeled_indices holds duplicates")
    if np.intersect1d(labeled, validation).size:
      raise DataError("data.labeled_indices overlaps the validation draw")
    if not has_label[labeled].all():
      raise DataError(f"data.labeled_indices names unlabeled rows "
                      f"{labeled[~has_label[labeled]][:5].tolist()} (no label to train on)")
  elif labels_per_class == -1:
    labeled = np.setdiff1d(np.flatnonzero(has_label), validation)
  elif labels_per_class >= 1:
    labeled = draw_labeled(labels, num_classes, labels_per_class, label_seed,
                           exclude=validation)
  else:
    raise DataError(f"data.labels_per_class must be -1 (all) or >= 1, got {labels_per_class}")
  taken = np.zeros(n, bool)
  taken[labeled] = True
  taken[validation] = True
  unlabeled = np.flatnonzero(~taken)
  if num_unlabeled < 0:
    raise DataError(f"data.num_unlabeled must be >= 0 (0: all), got {num_unlabeled}")
  if 0 < num_unlabeled < unlabeled.size:
    # Its own stream, as the validation draw's: the labels drawn stay the same.
    unlabeled = np.sort(np.random.default_rng([label_seed, 2]).choice(
        unlabeled, num_unlabeled, replace=False))
    return Split(labeled=labeled, unlabeled=unlabeled, validation=validation, subset=True)
  return Split(labeled=labeled, unlabeled=unlabeled, validation=validation)


def read_labeled_file(path, count: int = 0) -> tuple:
  """The labeled indices of a proposal.json (the first `count` when > 0)."""
  path = pathlib.Path(path)
  try:
    indices = json.loads(path.read_text())["labeled_indices"]
  except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
    raise DataError(f"data.labeled_file={str(path)!r} is not a proposal file with "
                      f"'labeled_indices' ({type(e).__name__}: {e}); write one with "
                      "python -m mnist_ten.propose") from None
  if count < 0 or count > len(indices):
    raise DataError(f"data.labeled_count={count} must be in [0, {len(indices)}] for "
                      f"{str(path)!r} (0: all)")
  return tuple(int(i) for i in (indices[:count] if count else indices))
