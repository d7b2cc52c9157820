"""FixMatch (Sohn et al. 2020): hard pseudo-labels from a weakly augmented view,
kept where confident, train the prediction on a strongly augmented view.

As in the official code, labeled, weak and strong batches go through one
forward pass (shared batch-norm statistics), the pseudo-labels carry no
gradient, and the mask rate is logged. Pseudo-label *accuracy* needs the
unlabeled labels, so it is never computed here.

`fixmatch.align=True` aligns the weak view's predictions to the labeled
examples' class distribution before thresholding (ReMixMatch's distribution
alignment, as in `mixmatch`; the model's marginal is this step's unlabeled
batch mean). Off by default: FixMatch as published.
"""
import jax
import jax.numpy as jnp

from mnist_ten import losses
from mnist_ten.methods import METHODS, Method


@METHODS.register("fixmatch")
class FixMatch(Method):

  def __init__(self, config, ctx):
    super().__init__(config, ctx)
    self.labeled_batch_size = config.batch_size
    self.unlabeled_batch_size = config.batch_size * config.fixmatch.mu
    self.weak = ctx.augmenter(config.augment.weak)
    self.strong = ctx.augmenter(config.augment.strong)
    self.labeled_augment = ctx.augmenter(config.augment.labeled)

  @property
  def images_per_step(self):
    return self.labeled_batch_size + 2 * self.unlabeled_batch_size

  def loss(self, params, *, forward, labeled, unlabeled, rng, step):
    cfg = self.config.fixmatch
    k_lab, k_weak, k_strong = jax.random.split(rng, 3)
    n_lab, n_unl = labeled.images.shape[0], unlabeled.images.shape[0]
    images = jnp.concatenate([self.labeled_augment(k_lab, labeled.images),
                              self.weak(k_weak, unlabeled.images),
                              self.strong(k_strong, unlabeled.images)])
    logits, batch_stats = forward(params, images)
    logits_lab = logits[:n_lab]
    logits_weak, logits_strong = logits[n_lab:n_lab + n_unl], logits[n_lab + n_unl:]
    supervised = losses.cross_entropy(logits_lab, labeled.labels,
                                      label_smoothing=self.config.label_smoothing)
    prior = None
    if cfg.get("align", False):
      prior = losses.class_distribution(labeled.labels, self.ctx.num_classes)
    unsupervised, pseudo, mask = losses.confident_consistency(logits_weak, logits_strong,
                                                              cfg.threshold, prior)
    weight = cfg.lambda_u * losses.linear_rampup(step, cfg.rampup_steps)
    return supervised + weight * unsupervised, {
        "loss/supervised": supervised, "loss/unsupervised": unsupervised,
        "mask_rate": mask.mean(), "lambda_u": weight,
        # The largest share of the confident pseudo-labels one class takes
        # (1/num_classes balanced, 1 collapsed; needs no labels).
        "pseudo_label_top_class_share": losses.top_class_share(pseudo, mask,
                                                               self.ctx.num_classes),
        "train/accuracy": losses.accuracy(logits_lab, labeled.labels),
    }, batch_stats

