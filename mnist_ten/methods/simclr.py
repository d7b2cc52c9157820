"""SimCLR (Chen et al. 2020): two augmented views of each unlabeled image,
a projection MLP (the auxiliary head) and the NT-Xent loss; the encoder is
then probed or fine-tuned on the labeled examples (configs/simclr.py)."""
import jax
import jax.numpy as jnp

from mnist_ten import losses
from mnist_ten.methods import METHODS, Method


@METHODS.register("simclr")
class SimCLR(Method):
  needs_images = True

  def __init__(self, config, ctx):
    super().__init__(config, ctx)
    self.unlabeled_batch_size = config.batch_size
    self.aux_widths = tuple(config.simclr.projection)
    self.augment = ctx.augmenter(config.augment.strong)

  @property
  def images_per_step(self):
    return 2 * self.unlabeled_batch_size

  def loss(self, params, *, forward, labeled, unlabeled, rng, step, state):
    k1, k2 = jax.random.split(rng)
    views = jnp.concatenate([self.augment(k1, unlabeled.images),
                             self.augment(k2, unlabeled.images)])
    z, batch_stats = forward(params, views, output="aux")
    n = unlabeled.images.shape[0]
    loss = losses.nt_xent(z[:n], z[n:], self.config.simclr.temperature)
    # How often a view's nearest other view is its partner: the contrastive accuracy.
    zn = z / jnp.linalg.norm(z, axis=-1, keepdims=True).clip(1e-12)
    sim = jnp.where(jnp.eye(2 * n, dtype=bool), -jnp.inf, zn @ zn.T)
    partner = jnp.concatenate([jnp.arange(n, 2 * n), jnp.arange(n)])
    return loss, {"loss/contrastive": loss,
                  "contrastive/accuracy": jnp.mean(sim.argmax(-1) == partner)}, batch_stats, state

  def views(self, rng, labeled_images, unlabeled_images):
    k1, k2 = jax.random.split(rng)
    return {"SimCLR view 1": self.augment(k1, unlabeled_images),
            "SimCLR view 2 (same images)": self.augment(k2, unlabeled_images)}
