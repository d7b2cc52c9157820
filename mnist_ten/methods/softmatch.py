"""SoftMatch (Chen et al., ICLR 2023): FixMatch whose hard threshold becomes a
soft weight per pseudo-label, from a truncated Gaussian over confidence,
with uniform alignment.

Uniform alignment: the weak view's probabilities are multiplied by
u / p~ (u uniform, p~ an EMA of the batch's mean prediction, momentum
`softmatch.momentum`, 0.999, starting at the first batch's mean) and
renormalised. The aligned confidences' mean mu and variance sigma^2 are
EMAs too (starting at 1/C and 1; the variance the unbiased batch variance).
An image with aligned confidence p weighs
    lambda(p) = exp(-(p - mu)^2 / (2 sigma^2 / n_sigma^2))  for p < mu, 1 above,
n_sigma = `softmatch.n_sigma` (2). The loss is FixMatch's cross-entropy of
the strong view against the weak view's hard pseudo-label, weighted by
lambda and averaged over the whole batch.

As USB (semilearn/algorithms/softmatch/ and its DistAlignEMAHook): p~ is
updated with this batch before aligning, mu and sigma^2 with this batch
before weighting, and the hard pseudo-label is the argmax of the *un*aligned
weak prediction. Where ours differs, and why:
- "mask_rate" logs the mean weight (soft); "mask/full_weight" the share of
  images at weight 1.
- USB's per-class variant (`per_class`, which fails there) is not built.
- The momentum 0.999 is the paper's and USB's, for runs of 2^20 steps; a
  run here is 2,000 (0.999^2000 = 0.14), so the variance keeps much of its
  initial 1.0 for most of the run and the weights below mu stay near 1 (at
  0.3 below mu: about 0.74 at step 500, 0.29 at step 2,000).
  `softmatch.momentum` sets it.
- `fixmatch.align` (alignment to the labeled classes) replaces the uniform
  target by the labeled examples' class distribution; off, as in the paper.
"""
import jax
import jax.numpy as jnp

from mnist_ten import losses
from mnist_ten.methods import METHODS
from mnist_ten.methods.fixmatch import FixMatch


def initial(num_classes: int):
  return {"p_model": jnp.full((num_classes,), 1.0 / num_classes, jnp.float32),
          "seen": jnp.zeros((), jnp.bool_),
          "mu": jnp.asarray(1.0 / num_classes, jnp.float32),
          "var": jnp.asarray(1.0, jnp.float32)}


def align(stats, probs, target, momentum: float):
  """(new stats, probs aligned to `target`): p~ takes this batch first (the
  first batch's mean replaces the initial value), then p * target / p~."""
  mean = probs.mean(0)
  p_model = jnp.where(stats["seen"], momentum * stats["p_model"] + (1.0 - momentum) * mean,
                      mean)
  aligned = probs * (target + 1e-6) / (p_model + 1e-6)
  return ({**stats, "p_model": p_model, "seen": jnp.ones((), jnp.bool_)},
          aligned / aligned.sum(-1, keepdims=True))


def update_confidence(stats, confidence, momentum: float):
  """mu and sigma^2 after this batch's (aligned) max probabilities."""
  n = confidence.shape[0]
  var = jnp.sum((confidence - confidence.mean()) ** 2) / max(n - 1, 1)  # unbiased, as torch.var
  return {**stats, "mu": momentum * stats["mu"] + (1.0 - momentum) * confidence.mean(),
          "var": momentum * stats["var"] + (1.0 - momentum) * var}


def weights(confidence, mu, var, n_sigma: float):
  """The truncated Gaussian: 1 at or above mu, exp(-(p-mu)^2 / (2 var / n^2)) below."""
  below = jnp.minimum(confidence - mu, 0.0)
  return jnp.exp(-below ** 2 / (2.0 * var / n_sigma ** 2))


@METHODS.register("softmatch")
class SoftMatch(FixMatch):
  # config.softmatch as the paper and USB: EMA momentum 0.999, n_sigma 2.
  OPTIONS = {"momentum": 0.999, "n_sigma": 2.0}

  def init_state(self, num_unlabeled):
    del num_unlabeled
    return initial(self.ctx.num_classes)

  def unlabeled_term(self, logits_weak, logits_strong, *, labeled, unlabeled, state, step):
    del unlabeled, step
    cfg, soft = self.config.fixmatch, self.config.softmatch
    num_classes = self.ctx.num_classes
    probs = jax.nn.softmax(jax.lax.stop_gradient(logits_weak))
    target = (losses.class_distribution(labeled.labels, num_classes)
              if cfg.get("align", False) else jnp.full((num_classes,), 1.0 / num_classes))
    stats, aligned = align(state, probs, target, soft.momentum)
    confidence = aligned.max(-1)
    stats = update_confidence(stats, confidence, soft.momentum)
    weight = weights(confidence, stats["mu"], stats["var"], soft.n_sigma)
    pseudo = probs.argmax(-1)
    metrics = {"confidence/mean": stats["mu"], "confidence/var": stats["var"],
               "mask/full_weight": jnp.mean(weight >= 1.0),
               **losses.per_class("class_distribution", stats["p_model"])}
    return losses.masked_consistency(logits_strong, pseudo, weight), pseudo, weight, metrics, stats
