"""FixMatch (Sohn et al. 2020): hard pseudo-labels from a weakly augmented view,
kept where confident, train the prediction on a strongly augmented view.

As in the official code, labeled, weak and strong batches go through one
forward pass (shared batch-norm statistics) by default, the pseudo-labels
carry no gradient, and the mask rate is logged. Pseudo-label *accuracy* needs
the unlabeled labels, so it is never computed here.

The weak view's logits only make stop-gradient pseudo-labels, so the joint
pass spends almost half of its backward on rows whose only gradient is their
share of the batch-norm statistics. `fixmatch.weak_pass` can skip it
(timings and accuracy: docs/speed.md):
- "joint" (default): as published.
- "no_grad": the same joint forward pass (same batch statistics, same
  logits), but the weak rows carry no gradient, not even through the
  statistics (`layers.gradient_rows`), so the backward convolutions skip
  them. The gradient lacks only that statistics term.
- "separate": the weak view in a forward pass of its own without gradient
  (USB's `use_cat=False`), labeled + strong in another. Each pass normalises
  with its own batch statistics; the running statistics take the
  image-weighted mean of the two passes' updates.
Without batch norm all three give the same loss and gradient (tested).

`fixmatch.align=True` aligns the weak view's predictions to the labeled
examples' class distribution before thresholding (ReMixMatch's distribution
alignment, as in `mixmatch`): each probability vector is multiplied by
p(y) / p~(y) and renormalised, p~(y) the model's mean prediction over the
last `fixmatch.align_batches` unlabeled batches (ReMixMatch: 128, kept in
the method's state; 1: this batch alone). Off by default: FixMatch as
published. Where it differs from ReMixMatch: p(y) is the class frequency of
this step's labeled batch (drawn with replacement from the labeled set),
not of the labeled set itself.

FlexMatch, FreeMatch and SoftMatch subclass this class: the same views and
forward passes (`logits`), another rule for which pseudo-labels count
(`unlabeled_term`).
"""
import jax
import jax.numpy as jnp

from mnist_ten import layers
from mnist_ten import losses
from mnist_ten.errors import ConfigError
from mnist_ten.methods import METHODS, Method

WEAK_PASSES = ("joint", "no_grad", "separate")


@METHODS.register("fixmatch")
class FixMatch(Method):

  def __init__(self, config, ctx):
    super().__init__(config, ctx)
    self.labeled_batch_size = config.batch_size
    self.unlabeled_batch_size = config.batch_size * config.fixmatch.mu
    self.weak = ctx.augmenter(config.augment.weak)
    self.strong = ctx.augmenter(config.augment.strong)
    self.labeled_augment = ctx.augmenter(config.augment.labeled)
    self.weak_pass = config.fixmatch.get("weak_pass", "joint")
    if self.weak_pass not in WEAK_PASSES:
      raise ConfigError(f"fixmatch.weak_pass must be one of {WEAK_PASSES}, "
                        f"got {self.weak_pass!r}")

  @property
  def images_per_step(self):
    return self.labeled_batch_size + 2 * self.unlabeled_batch_size

  def init_state(self, num_unlabeled):
    cfg = self.config.fixmatch
    if not cfg.get("align", False):
      return None
    return losses.marginal_queue(self.ctx.num_classes, cfg.get("align_batches", 1))

  def logits(self, params, forward, labeled, unlabeled, rng):
    """(labeled, weak, strong) logits and the new batch statistics, by
    `fixmatch.weak_pass`."""
    k_lab, k_weak, k_strong = jax.random.split(rng, 3)
    n_lab, n_unl = labeled.images.shape[0], unlabeled.images.shape[0]
    lab = self.labeled_augment(k_lab, labeled.images)
    weak = self.weak(k_weak, unlabeled.images)
    strong = self.strong(k_strong, unlabeled.images)
    if self.weak_pass == "joint":
      logits, batch_stats = forward(params, jnp.concatenate([lab, weak, strong]))
      return (logits[:n_lab], logits[n_lab:n_lab + n_unl], logits[n_lab + n_unl:],
              batch_stats)
    if self.weak_pass == "no_grad":
      # The weak rows last: the layers cut the gradient of every row from n on.
      with layers.gradient_rows(n_lab + n_unl):
        logits, batch_stats = forward(params, jnp.concatenate([lab, strong, weak]))
      return (logits[:n_lab], logits[n_lab + n_unl:], logits[n_lab:n_lab + n_unl],
              batch_stats)
    # stop_gradient on the parameters, not only on the logits: the weak
    # pass is then never linearised, and its backward is not built at all.
    logits_weak, weak_stats = forward(jax.lax.stop_gradient(params), weak)
    logits, batch_stats = forward(params, jnp.concatenate([lab, strong]))
    # Running statistics: m * old + (1 - m) * batch is linear in the batch
    # statistics, so the weighted mean of the two updates is the update by
    # the two passes' image-weighted statistics.
    share = n_unl / (n_lab + 2 * n_unl)
    batch_stats = jax.tree.map(lambda w, s: share * w + (1 - share) * s,
                               weak_stats, batch_stats)
    return logits[:n_lab], logits_weak, logits[n_lab:], batch_stats

  def weak_probs(self, logits_weak, labeled, align):
    """The weak view's probabilities without gradient, aligned to the labeled
    classes when `fixmatch.align` is on: (probs, the alignment queue after)."""
    probs = jax.nn.softmax(jax.lax.stop_gradient(logits_weak))
    if self.config.fixmatch.get("align", False):
      align, predicted = losses.update_marginal(align, probs)
      probs = losses.distribution_alignment(
          probs, losses.class_distribution(labeled.labels, self.ctx.num_classes), predicted)
    return probs, align

  def unlabeled_term(self, logits_weak, logits_strong, *, labeled, unlabeled, state, step):
    """The unlabeled loss (weighted by lambda_u, ramped up, in `loss`) and
    which pseudo-labels it used: (loss, pseudo-labels, mask, {metric: value},
    new state)."""
    del unlabeled, step
    cfg = self.config.fixmatch
    prior = predicted = None
    if cfg.get("align", False):
      prior = losses.class_distribution(labeled.labels, self.ctx.num_classes)
      state, predicted = losses.update_marginal(
          state, jax.nn.softmax(jax.lax.stop_gradient(logits_weak)))
    loss, pseudo, mask = losses.confident_consistency(logits_weak, logits_strong,
                                                      cfg.threshold, prior, predicted)
    return loss, pseudo, mask, {}, state

  def loss(self, params, *, forward, labeled, unlabeled, rng, step, state):
    cfg = self.config.fixmatch
    logits_lab, logits_weak, logits_strong, batch_stats = self.logits(
        params, forward, labeled, unlabeled, rng)
    supervised = losses.cross_entropy(logits_lab, labeled.labels,
                                      label_smoothing=self.config.label_smoothing)
    unsupervised, pseudo, mask, metrics, state = self.unlabeled_term(
        logits_weak, logits_strong, labeled=labeled, unlabeled=unlabeled, state=state,
        step=step)
    weight = cfg.lambda_u * losses.linear_rampup(step, cfg.rampup_steps)
    return supervised + weight * unsupervised, {
        "loss/supervised": supervised, "loss/unsupervised": unsupervised,
        "mask_rate": mask.mean(), "lambda_u": weight,
        # The largest share of the confident pseudo-labels one class takes
        # (1/num_classes balanced, 1 collapsed; needs no labels).
        "pseudo_label_top_class_share": losses.top_class_share(pseudo, mask,
                                                               self.ctx.num_classes),
        "train/accuracy": losses.accuracy(logits_lab, labeled.labels),
        **metrics,
    }, batch_stats, state

  def views(self, rng, labeled_images, unlabeled_images):
    k_lab, k_weak, k_strong = jax.random.split(rng, 3)
    return {"labeled": self.labeled_augment(k_lab, labeled_images),
            "weak": self.weak(k_weak, unlabeled_images),
            "strong (same images)": self.strong(k_strong, unlabeled_images)}
