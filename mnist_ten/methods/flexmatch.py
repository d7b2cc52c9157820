"""FlexMatch (Zhang et al., NeurIPS 2021): FixMatch with curriculum
pseudo-labelling, a threshold per class that rises with how well the model
already learns that class.

The method keeps, for every unlabeled image, its last prediction made with
confidence >= tau (`flexmatch.threshold`, 0.95), or -1 while it has none.
A class's learning effect sigma_c is the number of images whose kept
prediction is c; it is normalised as beta_c = sigma_c / max(max_c' sigma_c',
N_unused) with warm-up (the images without a confident prediction count as
one more class, so thresholds stay low while most images are unused), or by
max_c' sigma_c' alone without. The threshold of class c is
tau * M(beta_c), M(x) = x / (2 - x) ("convex", the paper's and USB's
default), x ("linear") or log2(1 + x) ("concave"). An image's hard
pseudo-label counts when its confidence reaches its predicted class's
threshold; the loss is FixMatch's (mean over the whole batch).

As USB's FlexMatchThresholdingHook (semilearn/algorithms/flexmatch/utils.py):
the mask of a step uses the thresholds from the predictions kept before it,
then the step's confident predictions are written to their images' rows.
Where ours differs, and why:
- The rows are indexed by the sampler's `unlabeled.indices`. The device
  pipeline draws with replacement, so an image can appear twice in a batch
  (about 1.7 times a step at 448 of 60,000): only confident predictions are
  written, and of two confident ones the larger class index (USB, and the
  tf.data pipeline, see each image once an epoch).
- USB skips recomputing beta when a single bucket (a class or "unused")
  holds every image; here it is recomputed every step. It differs only when
  every image's kept prediction is one class.
- Alignment (`fixmatch.align`) is FixMatch's option and off, as in the paper.
"""
import jax.numpy as jnp

from mnist_ten import losses
from mnist_ten.errors import ConfigError
from mnist_ten.methods import METHODS
from mnist_ten.methods.fixmatch import FixMatch

MAPPINGS = {
    "convex": lambda x: x / (2.0 - x),
    "linear": lambda x: x,
    "concave": lambda x: jnp.log2(1.0 + x),
}


def learning_effect(selected, num_classes: int, warmup: bool):
  """beta_c from each unlabeled image's kept prediction (-1: none yet)."""
  counts = jnp.bincount(selected + 1, length=num_classes + 1).astype(jnp.float32)
  unused, counts = counts[0], counts[1:]
  norm = jnp.maximum(counts.max(), unused) if warmup else counts.max()
  return counts / jnp.maximum(norm, 1.0)


def class_thresholds(beta, threshold: float, mapping: str = "convex"):
  """tau * M(beta_c): the confidence a pseudo-label of class c needs."""
  return threshold * MAPPINGS[mapping](beta)


def keep_confident(selected, indices, probs, threshold: float):
  """Writes each image's prediction where its confidence reaches tau; the
  others keep theirs. An image drawn twice in a batch with two confident
  predictions keeps the larger class index (a scatter-max: the same on every
  device and every run, where a scatter-set of duplicates is not)."""
  confident = probs.max(-1) >= threshold
  update = jnp.where(confident, probs.argmax(-1), -1).astype(selected.dtype)
  written = jnp.full_like(selected, -1).at[indices].max(update)
  return jnp.where(written >= 0, written, selected)


@METHODS.register("flexmatch")
class FlexMatch(FixMatch):
  # config.flexmatch as the paper and USB: warm-up and the convex mapping
  # (tau itself is fixmatch.threshold).
  OPTIONS = {"warmup": True, "mapping": "convex"}

  def __init__(self, config, ctx):
    super().__init__(config, ctx)
    mapping = config.flexmatch.mapping
    if mapping not in MAPPINGS:
      raise ConfigError(f"flexmatch.mapping must be one of {', '.join(MAPPINGS)}, "
                        f"got {mapping!r}")

  def init_state(self, num_unlabeled):
    return {"selected": jnp.full((num_unlabeled,), -1, jnp.int32),
            "align": super().init_state(num_unlabeled)}

  def unlabeled_term(self, logits_weak, logits_strong, *, labeled, unlabeled, state, step):
    del step
    cfg, flex = self.config.fixmatch, self.config.flexmatch
    probs, align = self.weak_probs(logits_weak, labeled, state["align"])
    beta = learning_effect(state["selected"], self.ctx.num_classes, flex.warmup)
    thresholds = class_thresholds(beta, cfg.threshold, flex.mapping)
    pseudo = probs.argmax(-1)
    mask = (probs.max(-1) >= thresholds[pseudo]).astype(jnp.float32)
    selected = keep_confident(state["selected"], unlabeled.indices, probs, cfg.threshold)
    metrics = {"threshold/mean": thresholds.mean(), "threshold/min": thresholds.min(),
               "unused_share": jnp.mean(selected < 0),
               **losses.per_class("threshold", thresholds)}
    return (losses.masked_consistency(logits_strong, pseudo, mask), pseudo, mask, metrics,
            {"selected": selected, "align": align})
