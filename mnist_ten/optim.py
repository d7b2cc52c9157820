"""Optimizers from optax and learning-rate schedules, chosen by name in `config.optim`."""
from typing import Callable, Dict

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mnist_ten.errors import ConfigError
from mnist_ten.registry import Registry

SCHEDULES: Registry = Registry("schedule")
OPTIMIZERS: Registry = Registry("optimizer")


# The schedules are written in jnp over `numbers` (optim.schedule_numbers):
# optax's own check their arguments in Python, so they cannot take traced
# values, and these numbers are arguments of the compiled step, not constants,
# so that rounds that differ only in lr and steps share one compiled program.


def schedule_numbers(cfg, num_steps: int) -> Dict[str, np.ndarray]:
  """What a schedule reads: peak lr, steps, warm-up steps and final fraction."""
  return {"lr": np.float32(cfg.lr), "num_steps": np.float32(num_steps),
          "warmup_steps": np.float32(cfg.warmup_steps),
          "final_lr_fraction": np.float32(cfg.final_lr_fraction)}


def _with_warmup(numbers, decay: Callable) -> Callable:
  """Linear warm-up from 0 over warmup_steps, then `decay(fraction of the
  remaining steps done)` times lr."""
  lr, warmup = numbers["lr"], numbers["warmup_steps"]
  decay_steps = jnp.maximum(numbers["num_steps"] - warmup, 1.0)

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    done = jnp.clip((step - warmup) / decay_steps, 0.0, 1.0)
    return jnp.where(step < warmup, lr * step / jnp.maximum(warmup, 1.0), lr * decay(done))
  return schedule


@SCHEDULES.register("constant")
def constant(numbers):
  return _with_warmup(numbers, lambda done: jnp.ones_like(done))


@SCHEDULES.register("cosine")
def cosine(numbers):
  """Cosine decay to lr * final_lr_fraction at num_steps (optax's
  cosine_decay_schedule)."""
  alpha = numbers["final_lr_fraction"]
  return _with_warmup(numbers, lambda done: (1 - alpha) * 0.5 * (1 + jnp.cos(jnp.pi * done))
                      + alpha)


@SCHEDULES.register("linear")
def linear(numbers):
  alpha = numbers["final_lr_fraction"]
  return _with_warmup(numbers, lambda done: 1 + (alpha - 1) * done)


def _decay_mask(params):
  # Biases and normalisation scales (vectors) are not decayed: decaying them
  # only shrinks the function's range without regularising it.
  return jax.tree.map(lambda p: p.ndim > 1, params)


@OPTIMIZERS.register("sgd")
def sgd(cfg, lr):
  # L2 added to the gradient before momentum, as in FixMatch's reference code.
  return optax.chain(
      optax.add_decayed_weights(cfg.weight_decay, _decay_mask),
      optax.sgd(lr, momentum=cfg.momentum or None, nesterov=cfg.nesterov))


@OPTIMIZERS.register("adam")
def adam(cfg, lr):
  return optax.chain(optax.add_decayed_weights(cfg.weight_decay, _decay_mask),
                     optax.adam(lr, b1=cfg.b1, b2=cfg.b2))


@OPTIMIZERS.register("adamw")
def adamw(cfg, lr):
  return optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay,
                     mask=_decay_mask)


def make(cfg, num_steps: int = None, *, frozen=(), numbers=None):
  """Returns (optax transformation, schedule) for `config.optim`; the
  parameters under each path of `frozen` (e.g. ("encoder",)) get no update.
  The schedule reads `numbers` (traced inside the step) or, without them,
  `schedule_numbers(cfg, num_steps)`."""
  if cfg.lr <= 0:
    raise ConfigError(f"optim.lr must be > 0, got {cfg.lr}")
  schedule_fn = SCHEDULES.get(cfg.schedule)
  schedule = schedule_fn(schedule_numbers(cfg, num_steps) if numbers is None else numbers)
  tx = OPTIMIZERS.get(cfg.name)(cfg, schedule)
  if cfg.grad_clip:
    tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), tx)
  if frozen:
    # A frozen part gets no update at all: no weight decay, no momentum.
    frozen = [tuple(path) for path in frozen]

    def label(params):
      def one(path, _):
        keys = tuple(getattr(k, "key", k) for k in path)
        return "frozen" if any(keys[:len(f)] == f for f in frozen) else "train"
      return jax.tree_util.tree_map_with_path(one, params)
    tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, label)
  return tx, schedule


def for_config(config, numbers=None):
  """`make` for a run's config, its frozen parts included: the trainer's
  state is initialised and its step updated with the same transformation."""
  return make(config.optim, config.num_steps, frozen=frozen_parts(config), numbers=numbers)


def frozen_parts(config):
  """The parameter paths a config keeps as they are: the encoder under
  `freeze_encoder`, a bag model's instance encoder under its `freeze_instance`."""
  return ([("encoder",)] if config.freeze_encoder else []) + (
      [("encoder", "instance")] if config.model.get("freeze_instance") else [])
