import numpy as np
import pytest

from mnist_ten import config as config_lib
from mnist_ten import optim
from mnist_ten.errors import ConfigError


def _cfg(**kw):
  c = config_lib.base().optim
  c.update(kw)
  return c


def test_cosine_with_warmup():
  _, schedule = optim.make(_cfg(lr=1.0, warmup_steps=10, schedule="cosine"), 110)
  assert float(schedule(0)) == 0.0
  np.testing.assert_allclose(float(schedule(5)), 0.5, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(10)), 1.0, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(60)), 0.5, rtol=1e-5)
  np.testing.assert_allclose(float(schedule(110)), 0.0, atol=1e-6)


@pytest.mark.parametrize("warmup", [0, 7])
@pytest.mark.parametrize("schedule", ["constant", "cosine", "linear"])
def test_schedules_equal_optax_s_own(schedule, warmup):
  # Ours take traced numbers (one compiled step for every round); optax's are the reference.
  import optax
  lr, steps, alpha = 0.05, 50, 0.1
  decay = {"constant": optax.constant_schedule(lr),
           "cosine": optax.cosine_decay_schedule(lr, steps - warmup, alpha=alpha),
           "linear": optax.linear_schedule(lr, lr * alpha, steps - warmup)}[schedule]
  reference = optax.join_schedules(
      [optax.linear_schedule(0.0, lr, warmup), decay], [warmup]) if warmup else decay
  _, ours = optim.make(_cfg(lr=lr, warmup_steps=warmup, schedule=schedule,
                            final_lr_fraction=alpha), steps)
  for step in range(0, steps + 5):
    np.testing.assert_allclose(float(ours(step)), float(reference(step)), rtol=1e-5,
                               atol=1e-8, err_msg=f"step {step}")


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("schedule", ["constant", "cosine", "linear"])
def test_every_optimizer_and_schedule_builds(name, schedule):
  import jax.numpy as jnp
  tx, _ = optim.make(_cfg(name=name, schedule=schedule), 100)
  params = {"w": jnp.ones((3, 3)), "b": jnp.ones(3)}
  updates, _ = tx.update({"w": jnp.ones((3, 3)), "b": jnp.ones(3)}, tx.init(params), params)
  assert float(jnp.abs(updates["w"]).sum()) > 0


def test_unknown_names():
  with pytest.raises(ConfigError, match="unknown optimizer 'lion'"):
    optim.make(_cfg(name="lion"), 10)
  with pytest.raises(ConfigError, match="unknown schedule 'step'"):
    optim.make(_cfg(schedule="step"), 10)
