import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnist_ten import config as config_lib
from mnist_ten import layers
from mnist_ten import models
from mnist_ten.errors import ConfigError


@pytest.mark.parametrize("n, size, channels, features, k, stride", [
    (6, 28, 1, 8, 5, 1),    # LeNet's first layer
    (16, 14, 8, 16, 5, 1),  # several chunks of images
    (5, 14, 4, 8, 3, 2),    # ResNet's strided 3x3, odd batch
    (3, 7, 6, 4, 3, 2),     # odd image size: asymmetric SAME padding
    (4, 14, 4, 8, 1, 2),    # ResNet's 1x1 shortcut
])
def test_conv_im2col_gradients_match_xla(n, size, channels, features, k, stride):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(n, size, size, channels)), jnp.float32)
  weights = jnp.asarray(rng.normal(size=(size, size, features)), jnp.float32)

  def loss(kernel_grad):
    conv = layers.Conv(features, (k, k), strides=stride, kernel_grad=kernel_grad)
    variables = conv.init(jax.random.key(1), x)

    def f(params, x):
      y = conv.apply({"params": params}, x)
      return jnp.sum(jnp.sin(y) * weights[:y.shape[1], :y.shape[2]])
    return f, variables["params"]

  f_xla, params = loss("xla")
  f_im2col, params2 = loss("im2col")
  jax.tree.map(np.testing.assert_array_equal, params, params2)
  # The forward pass is XLA's convolution in both.
  np.testing.assert_array_equal(f_xla(params, x), f_im2col(params, x))
  g_xla = jax.jit(jax.grad(f_xla, argnums=(0, 1)))(params, x)
  g_im2col = jax.jit(jax.grad(f_im2col, argnums=(0, 1)))(params, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4),
               g_xla, g_im2col)


def test_conv_matches_flax_conv_and_its_parameters():
  x = jnp.asarray(np.random.default_rng(0).random((2, 9, 9, 3)), jnp.float32)
  ours = layers.Conv(5, (3, 3), strides=2)
  theirs = nn.Conv(5, (3, 3), strides=2)
  variables = theirs.init(jax.random.key(0), x)
  # Same names, shapes and initial values: old checkpoints load, seeds reproduce.
  jax.tree.map(np.testing.assert_array_equal, ours.init(jax.random.key(0), x), variables)
  np.testing.assert_allclose(ours.apply(variables, x), theirs.apply(variables, x),
                             rtol=1e-5, atol=1e-6)


def test_max_pool_matches_flax():
  x = jax.random.normal(jax.random.key(0), (2, 8, 6, 3))
  np.testing.assert_array_equal(layers.max_pool(x),
                                nn.max_pool(x, (2, 2), strides=(2, 2)))
  g = jax.grad(lambda x: jnp.sum(layers.max_pool(x) ** 2))(x)
  g_flax = jax.grad(lambda x: jnp.sum(nn.max_pool(x, (2, 2), strides=(2, 2)) ** 2))(x)
  np.testing.assert_allclose(g, g_flax)  # no ties in normal draws
  odd = jnp.ones((1, 7, 7, 2))  # window does not divide: flax's pool, floor
  assert layers.max_pool(odd).shape == (1, 3, 3, 2)


# The LeNet and the ResNet are checked with both kernel gradients against
# float64 in tests/test_models.py.
@pytest.mark.parametrize("name", ["small_cnn"])
def test_models_take_kernel_grad(name):
  x = jnp.asarray(np.random.default_rng(0).random((4, 28, 28, 1)), jnp.float32)
  grads = {}
  for kernel_grad in ("xla", "im2col"):
    model = models.build(config_lib.model_config(name, kernel_grad=kernel_grad), 10)
    variables = model.init(jax.random.key(0), x[:1])

    def loss(params):
      logits, _ = model.apply({**variables, "params": params}, x, train=True,
                              mutable=["batch_stats"])
      return jnp.sum(logits ** 2)
    grads[kernel_grad] = jax.grad(loss)(variables["params"])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
               grads["xla"], grads["im2col"])


def test_unknown_kernel_grad():
  with pytest.raises(ConfigError, match="kernel_grad must be one of"):
    models.build(config_lib.model_config("lenet", kernel_grad="fast"), 10)
  with pytest.raises(ConfigError, match="kernel_grad must be one of"):
    layers.Conv(4, (3, 3), kernel_grad="fast").init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))


def test_auto_uses_im2col_on_one_cpu_device_only(monkeypatch):
  assert layers.use_im2col("im2col") and not layers.use_im2col("xla")
  assert layers.use_im2col("auto") == (jax.default_backend() == "cpu" and jax.device_count() == 1)
  # Over several devices the chunk scan would gather the split batch on
  # every device (checked in the 2-device HLO): XLA's gradient instead.
  monkeypatch.setattr(jax, "device_count", lambda: 4)
  assert not layers.use_im2col("auto")


def test_gradient_rows_keeps_the_forward_pass_and_cuts_the_later_rows():
  """Within gradient_rows(n) the ResNet (batch norm, strided and shortcut
  convolutions) computes the same outputs and statistics, and the rows from
  n on pass no gradient back: a loss on the first n rows, which reaches the
  later rows through the batch statistics without the cut, gives them a zero
  input gradient with it. (That the backward convolutions then skip those
  rows is tested on FixMatch's compiled step in test_methods.py.)"""
  # im2col kernel gradient (the FixMatch test in test_methods.py uses XLA's)
  model = models.build(config_lib.model_config("resnet", widths=(4, 8), kernel_grad="im2col"), 3)
  x = jax.random.uniform(jax.random.key(0), (6, 12, 12, 1))
  variables = model.init(jax.random.key(1), x)

  def apply(x):
    return model.apply(variables, x, train=True, mutable=["batch_stats"])

  def input_grad(x):
    return jax.grad(lambda x: apply(x)[0][:4].sum())(x)
  out, stats = apply(x)
  grad = input_grad(x)
  with layers.gradient_rows(4):
    out_cut, stats_cut = apply(x)
    grad_cut = input_grad(x)
  np.testing.assert_allclose(out_cut, out, rtol=1e-5, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), stats_cut, stats)
  assert float(jnp.abs(grad[4:]).max()) > 0 and float(jnp.abs(grad_cut[4:]).max()) == 0.0
  assert float(jnp.abs(grad_cut[:4]).max()) > 0
