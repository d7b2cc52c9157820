"""Class shares: how the pseudo-labels or the network's predictions on the
unlabeled images spread over the classes, against the shares the labeled
set implies (or a prior the config states). A class far below its share was
likely handed to another; one far above has taken another's images. Reads
no hidden label: only guesses, and the labeled examples' own labels.
"""
from typing import List, Optional, Sequence

import numpy as np

from mnist_ten.errors import ConfigError


def class_shares(labels: np.ndarray, num_classes: int,
                 weights: Optional[np.ndarray] = None) -> np.ndarray:
  """The fraction of `labels` (those with weight > 0) in each class."""
  labels = np.asarray(labels)
  if weights is not None:
    labels = labels[np.asarray(weights) > 0]
  counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
  return counts / max(counts.sum(), 1.0)


def expected_shares(labeled_labels: np.ndarray, num_classes: int,
                    prior: Sequence[float] = ()) -> np.ndarray:
  """`prior` normalised when given (data.class_prior), else the labeled set's
  class frequencies (one label per class: equal shares)."""
  if len(prior):
    prior = np.asarray(prior, np.float64)
    if prior.shape != (num_classes,) or (prior < 0).any() or not prior.sum() > 0:
      raise ConfigError(f"data.class_prior must be {num_classes} shares >= 0 with a positive "
                        f"sum, got {list(prior)}")
    return prior / prior.sum()
  return class_shares(labeled_labels, num_classes)


def class_label(c: int, names: Sequence[str] = ()) -> str:
  """Class c as logs and plots show it: its name where the data has names."""
  return names[c] if len(names) else str(c)


def warnings(shares: np.ndarray, expected: np.ndarray, what: str, low: float,
             high: float, names: Sequence[str] = ()) -> List[str]:
  """One sentence per class whose share is below `low` or above `high` times
  its expected share (classes by their `names` where the data has them)."""
  out = []
  for c, (got, want) in enumerate(zip(shares, expected)):
    if want <= 0:
      continue
    if got < low * want or got > high * want:
      out.append(f"class {class_label(c, names)} holds {100 * got:.1f}% of {what}, the "
                 f"labeled set implies {100 * want:.1f}% ({got / want:.2f}x"
                 + ("; it may have been handed to another class" if got < low * want else
                    "; it may have taken another class's images") + ")")
  return out


def format_shares(shares: np.ndarray, names: Sequence[str] = ()) -> str:
  return " ".join(f"{class_label(c, names)}:{100 * s:.1f}%" for c, s in enumerate(shares))
