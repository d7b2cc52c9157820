"""Ensembles of finished runs: members that differ by initialisation seed
(and optionally by model), combined by soft voting (mean probabilities),
hard voting (majority) and a selector.

The selector keeps the members whose score is within `tolerance` of the best
member's, then soft-votes them. A score may read only data whose labels
training may use:
  validation  accuracy on the labeled validation split the members held out
              (data.validation_size; fully supervised runs)
  agreement   mean agreement with each other member on the unlabeled train
              images (one label per class: a member that gave a digit away
              disagrees with the rest there); no label is read
Test labels score the combinations only, after they are chosen.
"""
import dataclasses
import json
import pathlib
from typing import Dict, List, Sequence

from absl import logging
import numpy as np

from mnist_ten import evaluate
from mnist_ten import inference
from mnist_ten import run as run_lib
from mnist_ten.errors import ConfigError, WorkdirError
from mnist_ten.registry import Registry

SELECTORS: Registry = Registry("ensemble selector")


def soft_vote(probs: np.ndarray) -> np.ndarray:
  """[M, N, C] member probabilities -> [N, C], their mean."""
  return np.asarray(probs, np.float64).mean(0)


def hard_vote(probs: np.ndarray) -> np.ndarray:
  """[M, N, C] -> [N] the class most members predict; a tie goes to the tied
  class with the highest mean probability."""
  probs = np.asarray(probs, np.float64)
  votes = np.zeros(probs.shape[1:])
  np.add.at(votes, (np.arange(probs.shape[1])[None, :], probs.argmax(-1)), 1.0)
  tied = votes == votes.max(-1, keepdims=True)
  return np.where(tied, probs.mean(0), -np.inf).argmax(-1)


@SELECTORS.register("validation")
def validation_scores(members: List["Member"]) -> np.ndarray:
  if any(m.val_probs is None for m in members):
    raise ConfigError("selector 'validation' needs members that held out a validation "
                      "split (data.validation_size > 0); use 'agreement' otherwise")
  return np.array([np.mean(m.val_probs.argmax(-1) == m.val_labels) for m in members])


@SELECTORS.register("agreement")
def agreement_scores(members: List["Member"]) -> np.ndarray:
  # Pairwise, not against the others' vote: with three members, the two that
  # remain when one is left out tie wherever they differ, and the vote cannot
  # tell which of them is the odd one out.
  if len(members) < 3:
    # With two, each agrees with the other exactly as often: no choice.
    raise ConfigError("selector 'agreement' needs at least three members")
  if any(m.unlabeled_probs is None for m in members):
    raise ConfigError("selector 'agreement' needs unlabeled train images; these members "
                      "use every train label: use --selector=validation with "
                      "--config.data.validation_size=N")
  guesses = np.stack([m.unlabeled_probs.argmax(-1) for m in members])
  pairs = (guesses[:, None] == guesses[None, :]).mean(-1)
  return (pairs.sum(1) - 1.0) / (len(members) - 1)


def check(selector: str, config, num_members: int, tolerance: float):
  """Refuses, before any member trains, a selector the members cannot serve."""
  SELECTORS.get(selector)  # a known name
  if not tolerance >= 0:
    raise ConfigError(f"tolerance={tolerance} must be >= 0 (members within it of the best "
                      "are kept)")
  if num_members < 1:
    raise ConfigError(f"an ensemble needs at least one member, got {num_members}")
  if selector == "validation" and not config.data.validation_size:
    raise ConfigError("selector 'validation' needs a labeled validation split: set "
                      "--config.data.validation_size=N (e.g. 5000)")
  if selector == "agreement":
    if num_members < 3:
      raise ConfigError("selector 'agreement' needs at least three members")
    if config.data.labels_per_class == -1 and not config.data.validation_size:
      raise ConfigError("selector 'agreement' needs unlabeled train images; with every "
                        "train label used, use --selector=validation and "
                        "--config.data.validation_size=N")


def select(scores: np.ndarray, tolerance: float) -> np.ndarray:
  """Indices of the members scoring within `tolerance` of the best."""
  return np.flatnonzero(scores >= scores.max() - tolerance)


@dataclasses.dataclass
class Member:
  """A finished run's probabilities on the test set, and on what a selector
  may read: its validation split (with labels) or unlabeled train images."""
  workdir: pathlib.Path
  test_probs: np.ndarray
  test_labels: np.ndarray
  unlabeled_probs: np.ndarray = None
  val_probs: np.ndarray = None
  val_labels: np.ndarray = None

  @property
  def test_accuracy(self) -> float:
    return float(np.mean(self.test_probs.argmax(-1) == self.test_labels))


def load_member(workdir, num_unlabeled: int = 10000) -> Member:
  """A member's probabilities as its run evaluated itself (network and any
  vote), cached in WORKDIR/ensemble_probs.npz (float16, compressed) for this
  finished run and these images: a rerun is instant, and a member whose cache
  is kept beside its results.json and split.json combines on a fresh checkout
  without its checkpoints."""
  workdir = pathlib.Path(workdir)
  if not (workdir / "results.json").exists():
    raise WorkdirError(f"ensemble member {str(workdir)!r} has not finished (no results.json)")
  parts = run_lib.Parts.from_workdir(workdir)
  dataset, split = parts.dataset, parts.split
  # The same unlabeled images for every member of one draw (they share the split).
  unlabeled = split.unlabeled[np.linspace(0, split.unlabeled.size - 1,
                                          min(num_unlabeled, split.unlabeled.size)).astype(int)]
  wanted = {"test": dataset.test_images, "unlabeled": dataset.train_images[unlabeled],
            "val": dataset.train_images[split.validation]}
  # The finished run (a retrained member writes another results.json) and the images.
  finished = json.loads((workdir / "results.json").read_text())
  key = (f"{finished.get('steps')} {finished.get('train_seconds')} {unlabeled.size} "
         f"{split.validation.size}")
  cache = workdir / "ensemble_probs.npz"
  arrays = dict(np.load(cache)) if cache.exists() else {}
  if str(arrays.pop("key", "")) != key:
    arrays = {}  # another run, or other images
  if any(name not in arrays for name, images in wanted.items() if len(images)):
    classifier = inference.load_classifier(workdir)
    for name, images in wanted.items():
      if len(images) and name not in arrays:
        arrays[name] = classifier(images)[1].astype(np.float16)
    tmp = workdir / "ensemble_probs.tmp.npz"
    np.savez_compressed(tmp, key=np.array(key), **arrays)
    tmp.replace(cache)
  arrays = {name: a.astype(np.float32) for name, a in arrays.items()}
  return Member(workdir, arrays["test"], dataset.test_labels,
                unlabeled_probs=arrays.get("unlabeled"),
                val_probs=arrays.get("val") if split.validation.size else None,
                val_labels=dataset.train_labels[split.validation] if split.validation.size
                else None)


def combine(members: Sequence[Member], selector: str, tolerance: float = 0.005) -> Dict:
  """Every member's and each combination's test accuracy (and the selector's
  scores and choice)."""
  if not members:
    raise ConfigError("an ensemble needs at least one finished member")
  if not tolerance >= 0:
    raise ConfigError(f"tolerance={tolerance} must be >= 0")
  labels = members[0].test_labels
  probs = np.stack([m.test_probs for m in members])
  num_classes = probs.shape[-1]
  scores = SELECTORS.get(selector)(list(members))
  chosen = select(scores, tolerance)

  def metrics(predicted):
    out = evaluate.classification_metrics(labels, predicted, num_classes)
    return {k: out[k] for k in ("accuracy", "macro_f1", "per_class_accuracy")}
  out = {
      "members": [{"workdir": str(m.workdir), "test_accuracy": m.test_accuracy,
                   f"{selector}_score": float(s)} for m, s in zip(members, scores)],
      "soft_vote": metrics(soft_vote(probs).argmax(-1)),
      "hard_vote": metrics(hard_vote(probs)),
      "selected": {**metrics(soft_vote(probs[chosen]).argmax(-1)),
                   "selector": selector, "tolerance": tolerance,
                   "members": chosen.tolist()},
  }
  logging.info("ensemble of %d: members %s; soft vote %.4f, hard vote %.4f, %s selects %s: "
               "%.4f", len(members), " ".join(f"{m.test_accuracy:.4f}" for m in members),
               out["soft_vote"]["accuracy"], out["hard_vote"]["accuracy"], selector,
               chosen.tolist(), out["selected"]["accuracy"])
  return out
