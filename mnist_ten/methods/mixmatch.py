"""MixMatch (Berthelot et al. 2019): guess labels for K augmentations of each
unlabeled image by averaging the model's predictions and sharpening them, mix
labeled and unlabeled examples with mixup, then cross-entropy on the labeled
part and L2 between probabilities on the unlabeled part, with lambda_u ramped up.

`mixmatch.mixup=False` trains on the un-mixed batches (the ablation the seed
project compared).

`mixmatch.align=True` adds ReMixMatch's distribution alignment (Berthelot et
al. 2020) before sharpening: each guess is multiplied by p(y) / p~(y) and
renormalised, where p(y) is the labeled examples' class distribution and
p~(y) the model's mean guess over the last `mixmatch.align_batches`
unlabeled batches (ReMixMatch's running mean over 128, kept in the method's
state; 1: this step's batch alone, each image averaged over its K views). It
stops the guesses from drifting into one class, the failure MixMatch shows
with one label per class. Off by default: MixMatch as published.
"""
import jax
import jax.numpy as jnp

from mnist_ten import losses
from mnist_ten.methods import METHODS, Method


@METHODS.register("mixmatch")
class MixMatch(Method):

  def __init__(self, config, ctx):
    super().__init__(config, ctx)
    cfg = config.mixmatch
    self.labeled_batch_size = config.batch_size
    self.unlabeled_batch_size = config.batch_size * cfg.mu
    self.augment = ctx.augmenter(config.augment.labeled)

  @property
  def images_per_step(self):
    k_views = self.config.mixmatch.k * self.unlabeled_batch_size
    return k_views + self.labeled_batch_size + k_views  # guessing pass + training pass

  def init_state(self, num_unlabeled):
    cfg = self.config.mixmatch
    if not cfg.get("align", False):
      return None
    return losses.marginal_queue(self.ctx.num_classes, cfg.get("align_batches", 1))

  def loss(self, params, *, forward, labeled, unlabeled, rng, step, state):
    cfg = self.config.mixmatch
    num_classes = self.ctx.num_classes
    k_lab, k_unl, k_mix = jax.random.split(rng, 3)
    x = self.augment(k_lab, labeled.images)
    u = jnp.concatenate([self.augment(k, unlabeled.images)
                         for k in jax.random.split(k_unl, cfg.k)])  # K views, view-major
    guess_logits, _ = forward(params, u)
    probs = jax.nn.softmax(jax.lax.stop_gradient(guess_logits)).reshape(
        (cfg.k, -1, num_classes)).mean(0)
    if cfg.get("align", False):
      state, predicted = losses.update_marginal(state, probs)
      probs = losses.distribution_alignment(
          probs, losses.class_distribution(labeled.labels, num_classes), predicted)
    guess = jnp.tile(losses.sharpen(probs, cfg.temperature), (cfg.k, 1))

    inputs = jnp.concatenate([x, u])
    targets = jnp.concatenate([jax.nn.one_hot(labeled.labels, num_classes), guess])
    if cfg.mixup:
      # Each example is mixed with a random partner from the whole batch, as in
      # the paper's W = shuffle(concat(X, U)).
      inputs, targets = losses.mixup(k_mix, inputs, targets, cfg.alpha)
    logits, batch_stats = forward(params, inputs)
    n = x.shape[0]
    supervised = losses.soft_cross_entropy(logits[:n], targets[:n]).mean()
    unsupervised = jnp.mean((jax.nn.softmax(logits[n:]) - targets[n:]) ** 2)
    weight = cfg.lambda_u * losses.linear_rampup(step, cfg.rampup_steps)
    return supervised + weight * unsupervised, {
        "loss/supervised": supervised, "loss/unsupervised": unsupervised,
        "lambda_u": weight, "guess_confidence": probs.max(-1).mean(),
        # The largest share of the guesses that one class takes: 1/num_classes
        # when balanced, 1 when collapsed (needs no labels).
        "guess_top_class_share": losses.top_class_share(probs.argmax(-1), None, num_classes),
    }, batch_stats, state

  def views(self, rng, labeled_images, unlabeled_images):
    cfg = self.config.mixmatch
    k_lab, k_unl, k_mix = jax.random.split(rng, 3)
    x = self.augment(k_lab, labeled_images)
    out = {"labeled": x}
    for i, k in enumerate(jax.random.split(k_unl, cfg.k)):
      out[f"unlabeled view {i + 1}"] = self.augment(k, unlabeled_images)
    if cfg.mixup:
      # As `loss` mixes: the labeled batch and every unlabeled view together.
      inputs = jnp.concatenate([x] + [out[f"unlabeled view {i + 1}"] for i in range(cfg.k)])
      dummy = jnp.zeros((inputs.shape[0], self.ctx.num_classes))
      out["mixed (mixup)"] = losses.mixup(k_mix, inputs, dummy, cfg.alpha)[0][x.shape[0]:][
          :unlabeled_images.shape[0]]
    return out

  def samples(self, rng):
    if not self.config.mixmatch.mixup:
      return {}
    n = self.labeled_batch_size + self.config.mixmatch.k * self.unlabeled_batch_size
    return {"mixup lambda": jnp.concatenate([
        losses.mixup_lambda(k, self.config.mixmatch.alpha, n)
        for k in jax.random.split(rng, 20)])}
