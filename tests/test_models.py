import functools

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from mnist_ten import config as config_lib
from mnist_ten import models
from mnist_ten.errors import ConfigError


@pytest.mark.parametrize("name, kwargs, feature_dim", [
    ("mlp", dict(widths=(512, 512)), 512),
    ("mlp", dict(widths=(64,)), 64),
    ("small_cnn", {}, 7 * 7 * 32),
    ("lenet", {}, 128),
    ("resnet", {}, 64),
    ("resnet", dict(norm="group", blocks=2), 64),
])
def test_model_shapes_and_parts(name, kwargs, feature_dim):
  model = models.build(config_lib.model_config(name, **kwargs), num_classes=10)
  x = jnp.zeros((3, 28, 28, 1))
  variables = model.init(jax.random.key(0), x)
  assert set(variables["params"]) == {"encoder", "head"}
  assert model.apply(variables, x).shape == (3, 10)
  features = model.apply(variables, x, output="features")
  assert features.shape == (3, feature_dim)


def test_aux_head_and_frozen_encoder():
  x = jnp.ones((2, 28, 28, 1))
  model = models.build(config_lib.model_config("lenet"), 10, aux_widths=(32, 8))
  variables = model.init(jax.random.key(0), x)
  assert set(variables["params"]) == {"encoder", "head", "aux_head"}
  out = model.apply(variables, x, output="all")
  assert out["aux"].shape == (2, 8) and out["logits"].shape == (2, 10)
  frozen = models.build(config_lib.model_config("lenet"), 10, frozen_encoder=True)
  # In train mode a frozen encoder neither updates its batch statistics nor
  # passes gradients.
  _, updates = frozen.apply(variables, x, train=True, mutable=["batch_stats"])
  assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()),
                                   updates["batch_stats"], variables["batch_stats"]))
  grads = jax.grad(lambda p: frozen.apply({**variables, "params": p}, x).sum())(
      variables["params"])
  assert all(float(jnp.abs(g).sum()) == 0 for g in jax.tree.leaves(grads["encoder"]))


def test_mlp_784_512_512_10_parameter_count():
  model = models.build(config_lib.model_config("mlp"), num_classes=10)
  params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
  count = sum(p.size for p in jax.tree.leaves(params))
  assert count == 784 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10


def test_unknown_model_and_argument():
  with pytest.raises(ConfigError, match="unknown model 'vgg'"):
    models.build(ml_collections.ConfigDict({"name": "vgg"}), 10)
  with pytest.raises(ConfigError, match="model 'mlp'"):
    models.build(ml_collections.ConfigDict({"name": "mlp", "depth": 3}), 10)


@functools.lru_cache(maxsize=None)
def _float64_gradient(name):
  """(variables, params, x, truth): the eager float64 train-mode gradient of
  model `name` by XLA's own convolution gradient, the reference for every
  kernel_grad (an error shared by the eager and compiled custom gradient
  would pass a comparison with itself)."""
  model = models.build(config_lib.model_config(name, kernel_grad="xla"), 10)
  with jax.enable_x64(True):
    x = jax.random.uniform(jax.random.key(1), (8, 28, 28, 1), jnp.float64)
    variables = model.init(jax.random.key(0), x)
    # Nudged so that zero-initialised scales (the ResNet's last norm in each
    # block) let gradients through every branch.
    keys = iter(jax.random.split(jax.random.key(2), len(jax.tree.leaves(variables["params"]))))
    params = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(next(keys), a.shape, a.dtype),
                          variables["params"])
    truth = jax.grad(_loss(model, variables))(params, x)
  return variables, params, x, truth


def _loss(model, variables):
  def loss(params, x):
    logits, _ = model.apply({**variables, "params": params}, x, train=True,
                            mutable=["batch_stats"])
    return jnp.sum(jnp.sin(3 * logits))  # a plain sum would cancel through batch norm
  return loss


@pytest.mark.parametrize("name, kernel_grad", [
    ("lenet", "auto"), ("lenet", "xla"), ("resnet", "auto"), ("resnet", "xla"),
])
def test_compiled_training_gradients_match_float64(name, kernel_grad):
  """The jit-compiled train-mode gradient (batch statistics, the custom
  kernel gradient and max-pool) against an eager float64 one. Guards against
  compiler regressions: with XLA:CPU's convolutions moved from YNNPACK to
  Eigen (`XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=individual_dot`),
  jaxlib 0.10.2 gets the LeNet's gradient 94% and the ResNet's 0.7% wrong
  here, and this test fails (docs/speed.md)."""
  variables, params, x, truth = _float64_gradient(name)
  model = models.build(config_lib.model_config(name, kernel_grad=kernel_grad), 10)
  params32 = jax.tree.map(lambda a: a.astype(jnp.float32), params)
  got = jax.jit(jax.grad(_loss(model, variables)))(params32, x.astype(jnp.float32))
  for (path, g), t in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(truth)):
    err = float(jnp.abs(g - t).max() / jnp.abs(t).max())
    assert err < 1e-4, (jax.tree_util.keystr(path), err)
