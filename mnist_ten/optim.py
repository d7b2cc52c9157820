"""Optimizers and learning-rate schedules from optax, chosen by name in `config.optim`."""
import jax
import optax

from mnist_ten.errors import ConfigError
from mnist_ten.registry import Registry

SCHEDULES: Registry = Registry("schedule")
OPTIMIZERS: Registry = Registry("optimizer")


def _after_warmup(cfg, schedule):
  """Linear warm-up from 0 over optim.warmup_steps, then `schedule`."""
  if not cfg.warmup_steps:
    return schedule
  return optax.join_schedules(
      [optax.linear_schedule(0.0, cfg.lr, cfg.warmup_steps), schedule], [cfg.warmup_steps])


@SCHEDULES.register("constant")
def constant(cfg, num_steps):
  return _after_warmup(cfg, optax.constant_schedule(cfg.lr))


@SCHEDULES.register("cosine")
def cosine(cfg, num_steps):
  """Cosine decay to lr * final_lr_fraction at num_steps."""
  return _after_warmup(cfg, optax.cosine_decay_schedule(
      cfg.lr, max(num_steps - cfg.warmup_steps, 1), alpha=cfg.final_lr_fraction))


@SCHEDULES.register("linear")
def linear(cfg, num_steps):
  return _after_warmup(cfg, optax.linear_schedule(
      cfg.lr, cfg.lr * cfg.final_lr_fraction, max(num_steps - cfg.warmup_steps, 1)))


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


def make(cfg, num_steps: int, *, frozen=()):
  """Returns (optax transformation, schedule) for `config.optim`; the
  parameters under each path of `frozen` (e.g. ("encoder",)) get no update."""
  if cfg.lr <= 0:
    raise ConfigError(f"optim.lr must be > 0, got {cfg.lr}")
  schedule = SCHEDULES.get(cfg.schedule)(cfg, num_steps)
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


def frozen_parts(config):
  """The parameter paths a config keeps as they are: the encoder under
  `freeze_encoder`, a bag model's instance encoder under its `freeze_instance`."""
  return ([("encoder",)] if config.freeze_encoder else []) + (
      [("encoder", "instance")] if config.model.get("freeze_instance") else [])
