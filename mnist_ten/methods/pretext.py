"""The rotation/flip pretext task (Gidaris et al. 2018, with flips): predict
which of 8 transforms (4 rotations x optional horizontal flip) was applied to
an unlabeled image, with the model's auxiliary head. Its encoder is then
transferred (configs/pretext.py); `pretext_alternate` alternates supervised
steps on the labeled examples with pretext steps; `RotationAuxiliary`
(config.rotation_aux) adds the task as an auxiliary loss to any method.
"""
import jax
import jax.numpy as jnp

from mnist_ten import losses
from mnist_ten.errors import ConfigError
from mnist_ten.methods import METHODS, Method
from mnist_ten.methods.supervised import Supervised

NUM_TRANSFORMS = 8


def transform(images, t):
  """Applies transform t in [0, 8) to each image: flip if t >= 4, then rotate
  by (t mod 4) quarter turns."""

  def one(image, tt):
    image = jnp.where(tt >= 4, image[:, ::-1], image)
    return jax.lax.switch(tt % 4, [lambda x, r=r: jnp.rot90(x, r, axes=(0, 1))
                                   for r in range(4)], image)
  return jax.vmap(one)(images, t)


def pretext_loss(method, params, forward, images, rng):
  k_aug, k_t = jax.random.split(rng)
  t = jax.random.randint(k_t, (images.shape[0],), 0, NUM_TRANSFORMS)
  logits, batch_stats = forward(params, transform(method.augment(k_aug, images), t),
                                output="aux")
  loss = losses.cross_entropy(logits, t)
  return loss, losses.accuracy(logits, t), batch_stats


def pretext_views(method, images, rng):
  k_aug, k_t = jax.random.split(rng)
  t = jax.random.randint(k_t, (images.shape[0],), 0, NUM_TRANSFORMS)
  return {"pretext (8 rotations/flips)": transform(method.augment(k_aug, images), t)}


def _check_square(ctx):
  h, w = ctx.image_shape[:2]
  if h != w:
    raise ConfigError(f"the rotation pretext task needs square images, got {h}x{w}")


@METHODS.register("rotation")
class RotationPretext(Method):
  needs_images = True
  aux_widths = (NUM_TRANSFORMS,)

  def __init__(self, config, ctx):
    super().__init__(config, ctx)
    _check_square(ctx)
    self.unlabeled_batch_size = config.batch_size
    self.augment = ctx.augmenter(config.augment.labeled)

  def loss(self, params, *, forward, labeled, unlabeled, rng, step, state):
    loss, accuracy, batch_stats = pretext_loss(self, params, forward, unlabeled.images, rng)
    return loss, {"loss/pretext": loss, "pretext/accuracy": accuracy}, batch_stats, state

  def views(self, rng, labeled_images, unlabeled_images):
    return pretext_views(self, unlabeled_images, rng)


@METHODS.register("pretext_alternate")
class AlternatePretext(Supervised):
  """Even steps: supervised on the labeled batch; odd steps: the pretext task
  on the unlabeled batch. Each step computes both losses and keeps one (its
  gradient, batch statistics and metrics; the other's gradient is zero): on
  XLA:CPU a `lax.cond` holding the network is slower than both branches
  together (docs/speed.md)."""
  needs_images = True
  aux_widths = (NUM_TRANSFORMS,)

  def __init__(self, config, ctx):
    super().__init__(config, ctx)
    _check_square(ctx)
    self.unlabeled_batch_size = config.batch_size

  def loss(self, params, *, forward, labeled, unlabeled, rng, step, state):
    nan = jnp.full((), jnp.nan)  # "not measured on this step": left out of the log means
    main = step % 2 == 0
    sup_loss, sup_metrics, sup_stats, _ = Supervised.loss(
        self, params, forward=forward, labeled=labeled, unlabeled=None, rng=rng, step=step,
        state=state)
    pre_loss, pre_accuracy, pre_stats = pretext_loss(self, params, forward, unlabeled.images,
                                                     rng)
    pick = lambda a, b: jax.tree.map(lambda x, y: jnp.where(main, x, y), a, b)
    metrics = {name: jnp.where(main, value, nan) for name, value in sup_metrics.items()}
    metrics.update({"loss/pretext": jnp.where(main, nan, pre_loss),
                    "pretext/accuracy": jnp.where(main, nan, pre_accuracy)})
    return jnp.where(main, sup_loss, pre_loss), metrics, pick(sup_stats, pre_stats), state

  def views(self, rng, labeled_images, unlabeled_images):
    return {**super().views(rng, labeled_images, unlabeled_images),
            **pretext_views(self, unlabeled_images, rng)}


class RotationAuxiliary(Method):
  """Any method plus the rotation/flip pretext task as an auxiliary loss on
  the same encoder, trained jointly (S4L, Zhai et al. 2019; ReMixMatch's
  rotation loss): `config.rotation_aux.weight` x the cross-entropy of
  predicting which of the 8 transforms was applied to the first
  `rotation_aux.images` unlabeled images of each step (augmented with
  `augment.labeled` first), through an auxiliary head. The method's own
  loss, batch statistics, state, preparation and vote are untouched; the
  pretext forward pass's batch statistics are not kept."""
  needs_images = True
  aux_widths = (NUM_TRANSFORMS,)

  def __init__(self, inner: Method, config, ctx):
    super().__init__(config, ctx)
    cfg = config.rotation_aux
    if not cfg.weight >= 0:
      raise ConfigError(f"rotation_aux.weight must be >= 0, got {cfg.weight}")
    if not inner.trains or inner.aux_widths:
      raise ConfigError(f"rotation_aux needs a method that trains a network without an "
                        f"auxiliary head of its own; {config.method!r} "
                        + ("trains none" if not inner.trains else "has one"))
    if ctx.points or ctx.bags:
      raise ConfigError("rotation_aux needs images (it rotates them); this dataset's examples "
                        "are " + ("2-D points" if ctx.points else "bags of instances"))
    _check_square(ctx)
    if not inner.unlabeled_batch_size:
      raise ConfigError(f"rotation_aux rotates unlabeled images; method {config.method!r} "
                        "samples none")
    self.inner = inner
    self.images = cfg.images or inner.labeled_batch_size
    if not 0 < self.images <= inner.unlabeled_batch_size:
      raise ConfigError(f"rotation_aux.images={cfg.images} must be in [1, "
                        f"{inner.unlabeled_batch_size}] (the unlabeled batch), or 0")
    self.weight = cfg.weight
    self.labeled_batch_size = inner.labeled_batch_size
    self.unlabeled_batch_size = inner.unlabeled_batch_size
    self.votes, self.uses_init_network = inner.votes, inner.uses_init_network
    self.augment = ctx.augmenter(config.augment.labeled)

  @property
  def images_per_step(self):
    return self.inner.images_per_step + self.images

  def prepare(self, data, init_network=None):
    return self.inner.prepare(data, init_network)

  def record(self):
    return self.inner.record()

  def init_state(self, num_unlabeled):
    return self.inner.init_state(num_unlabeled)

  def vote(self, images):
    return self.inner.vote(images)

  def samples(self, rng):
    return self.inner.samples(rng)

  def views(self, rng, labeled_images, unlabeled_images):
    return {**self.inner.views(rng, labeled_images, unlabeled_images),
            **pretext_views(self, unlabeled_images[:self.images], rng)}

  def loss(self, params, *, forward, labeled, unlabeled, rng, step, state):
    k_inner, k_pretext = jax.random.split(rng)
    loss, metrics, batch_stats, state = self.inner.loss(
        params, forward=forward, labeled=labeled, unlabeled=unlabeled, rng=k_inner, step=step,
        state=state)
    pretext, accuracy, _ = pretext_loss(self, params, forward,
                                        unlabeled.images[:self.images], k_pretext)
    return loss + self.weight * pretext, {
        **metrics, "loss/rotation_aux": pretext, "rotation_aux/accuracy": accuracy
    }, batch_stats, state
