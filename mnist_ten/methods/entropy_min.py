"""Entropy minimisation (Grandvalet & Bengio 2005): the README's worked
example of adding a method in one file plus one config.

Cross-entropy on the augmented labeled batch, plus `lambda_u` (ramped up
linearly) times the mean prediction entropy on augmented unlabeled images:
confident predictions push decision boundaries into low-density regions.
"""
import jax
import jax.numpy as jnp

from mnist_ten import losses
from mnist_ten.methods import METHODS, Method


@METHODS.register("entropy_min")
class EntropyMinimization(Method):

  def __init__(self, config, ctx):
    super().__init__(config, ctx)
    self.labeled_batch_size = config.batch_size
    self.unlabeled_batch_size = config.batch_size * config.entropy_min.mu
    self.augment = ctx.augmenter(config.augment.labeled)

  def loss(self, params, *, forward, labeled, unlabeled, rng, step, state):
    cfg = self.config.entropy_min
    n_lab = labeled.images.shape[0]
    # One forward pass over both batches: batch norm sees one distribution.
    images = self.augment(rng, jnp.concatenate([labeled.images, unlabeled.images]))
    logits, batch_stats = forward(params, images)
    supervised = losses.cross_entropy(logits[:n_lab], labeled.labels)
    entropy = jnp.mean(losses.entropy(jax.nn.softmax(logits[n_lab:])))
    weight = cfg.lambda_u * losses.linear_rampup(step, cfg.rampup_steps)
    return supervised + weight * entropy, {
        "loss/supervised": supervised, "entropy/unlabeled": entropy,
        "lambda_u": weight, "train/accuracy": losses.accuracy(logits[:n_lab], labeled.labels),
    }, batch_stats, state

  def views(self, rng, labeled_images, unlabeled_images):
    images = self.augment(rng, jnp.concatenate([labeled_images, unlabeled_images]))
    n = labeled_images.shape[0]
    return {"labeled": images[:n], "unlabeled": images[n:]}
