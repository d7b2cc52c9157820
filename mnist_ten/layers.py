"""Layers whose gradients XLA:CPU computes fast; the models build on them.

`Conv` is `flax.linen.Conv` (same parameters, same forward pass) with one
difference on CPU: the gradient with respect to the kernel. XLA:CPU computes
it as a convolution whose window is the whole output image, which runs at a
fraction of the machine's speed (several times the forward pass). Here the
kernel gradient is a matrix product of the layer's input patches (im2col)
with the output gradient, built a few images at a time inside a `lax.scan`
so that the patches stay in cache rather than being written out for the
whole batch. The forward pass and the input gradient stay XLA's own
convolutions, which are fast.

`gradient_rows(n)`: within it, the rows of a batch from n on go through the
same forward pass (the same convolutions, the same batch-norm statistics),
but no gradient flows through them into a `Conv` or into a `BatchNorm`'s
statistics, so the backward convolutions, most of a step's time, skip
them. It is for rows that the loss uses without gradient: FixMatch's weak
view, whose logits only make stop-gradient pseudo-labels
(`fixmatch.weak_pass=no_grad`). A context, read while the step is traced,
so that the models need no extra argument on every layer.

`max_pool` is a 2x2 max-pool as a reshape and a max, whose gradient is an
elementwise select; XLA:CPU's `reduce_window` gradient (`select_and_scatter`)
is several times slower.

Off CPU (GPU, TPU) and across several devices the convolution is XLA's
own (see `use_im2col`): cuDNN and the TPU compiler handle it well.
`experiments/benchmark.py` and docs/speed.md give the timings.
"""
import contextlib
import contextvars
import functools
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mnist_ten.errors import ConfigError

KERNEL_GRADS = ("auto", "xla", "im2col")
# Patches built per scan iteration; a few MiB keeps them in cache (the LeNet's
# second convolution ran fastest with 4-8 images of 14x14x800 patches).
_PATCH_BYTES = 4 << 20
_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


_GRADIENT_ROWS: contextvars.ContextVar[Optional[int]] = contextvars.ContextVar(
    "gradient_rows", default=None)


@contextlib.contextmanager
def gradient_rows(n: int):
  """Within: no gradient flows through the rows from `n` on into a
  convolution or batch-norm statistics (see the module docstring)."""
  token = _GRADIENT_ROWS.set(int(n))
  try:
    yield
  finally:
    _GRADIENT_ROWS.reset(token)


def _tail_start(x) -> Optional[int]:
  """The first row without gradient, or None when every row has it."""
  n = _GRADIENT_ROWS.get()
  return n if n is not None and n < x.shape[0] else None


def stop_tail_gradient(x):
  """x with the rows from `gradient_rows`'s n on under stop_gradient."""
  n = _tail_start(x)
  if n is None:
    return x
  return jnp.concatenate([x[:n], jax.lax.stop_gradient(x[n:])])


def _conv(x, kernel, strides, padding):
  return jax.lax.conv_general_dilated(x, kernel, strides, padding,
                                      dimension_numbers=_DIMENSIONS)


def _chunk(n: int, bytes_per_image: int) -> int:
  """The largest divisor of n whose images' patches fit in _PATCH_BYTES."""
  limit = max(1, _PATCH_BYTES // max(1, bytes_per_image))
  return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


def kernel_grad_im2col(x, dy, kernel_shape, strides, padding):
  """d(loss)/d(kernel) of `_conv(x, kernel, strides, padding)` given the output
  gradient `dy`: sum over images and positions of patch ⊗ dy, one chunk of
  images at a time."""
  kh, kw, c, o = kernel_shape
  n, oh, ow, _ = dy.shape
  sh, sw = strides
  (ph, _), (pw, _) = padding
  # Pad enough on the high side that every tap's strided slice is in range.
  xp = jnp.pad(x, ((0, 0), (ph, max(0, (oh - 1) * sh + kh - x.shape[1] - ph)),
                   (pw, max(0, (ow - 1) * sw + kw - x.shape[2] - pw)), (0, 0)))
  b = _chunk(n, oh * ow * kh * kw * c * x.dtype.itemsize)
  xp = xp.reshape(n // b, b, *xp.shape[1:])
  dy = dy.reshape(n // b, b * oh * ow, o)

  def add_chunk(grad, chunk):
    xc, dc = chunk
    patches = jnp.concatenate(
        [xc[:, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw, :]
         for i in range(kh) for j in range(kw)], axis=-1)
    return grad + patches.reshape(-1, kh * kw * c).T @ dc, None

  grad, _ = jax.lax.scan(add_chunk, jnp.zeros((kh * kw * c, o), dy.dtype), (xp, dy))
  return grad.reshape(kernel_shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_im2col_grad(x, kernel, strides, padding):
  """XLA's convolution (NHWC, HWIO), with the kernel gradient by im2col."""
  return _conv(x, kernel, strides, padding)


def _fwd(x, kernel, strides, padding):
  return _conv(x, kernel, strides, padding), (x, kernel)


def _bwd(strides, padding, residuals, dy):
  x, kernel = residuals
  _, input_vjp = jax.vjp(lambda x: _conv(x, kernel, strides, padding), x)
  return (input_vjp(dy)[0],
          kernel_grad_im2col(x, dy, kernel.shape, strides, padding).astype(kernel.dtype))


conv_im2col_grad.defvjp(_fwd, _bwd)


def use_im2col(kernel_grad: str) -> bool:
  """auto: on a single CPU device only. With the batch split over several
  devices the scan over image chunks would run over a split axis, which XLA
  partitions by gathering the batch, so every device would compute the
  whole gradient; XLA's own convolution gradient partitions properly."""
  if kernel_grad not in KERNEL_GRADS:
    raise ConfigError(f"kernel_grad must be one of {KERNEL_GRADS}, got {kernel_grad!r}")
  if kernel_grad == "auto":
    return jax.default_backend() == "cpu" and jax.device_count() == 1
  return kernel_grad == "im2col"


class Conv(nn.Module):
  """2-D convolution, NHWC, 'SAME' padding; parameters `kernel` (HWIO) and
  `bias` as in `flax.linen.Conv`, so checkpoints are interchangeable.
  `kernel_grad`: auto (im2col on a single CPU device, XLA's elsewhere), xla
  or im2col."""
  features: int
  kernel_size: Sequence[int]
  strides: int = 1
  use_bias: bool = True
  kernel_grad: str = "auto"

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel_size
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (kh, kw, x.shape[-1], self.features))
    strides = (self.strides, self.strides)
    padding = tuple(jax.lax.padtype_to_pads(x.shape[1:3], (kh, kw), strides, "SAME"))
    conv = conv_im2col_grad if use_im2col(self.kernel_grad) else _conv
    n = _tail_start(x)
    if n is None:
      y = conv(x, kernel, strides, padding)
    else:  # two convolutions, so that the rows without gradient have no backward
      y = jnp.concatenate([conv(x[:n], kernel, strides, padding),
                           _conv(jax.lax.stop_gradient(x[n:]), jax.lax.stop_gradient(kernel),
                                 strides, padding)])
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,))
    return y


class BatchNorm(nn.BatchNorm):
  """`flax.linen.BatchNorm` (same parameters and statistics) whose rows past
  `gradient_rows` count in the batch statistics without gradient."""

  def __call__(self, x, *args, **kwargs):  # pylint: disable=arguments-differ
    return super().__call__(stop_tail_gradient(x), *args, **kwargs)


def max_pool(x, window: int = 2):
  """Max-pool, window = stride, NHWC; a reshape and a max when the window
  divides the image (see the module docstring)."""
  n, h, w, c = x.shape
  if h % window or w % window:
    return nn.max_pool(x, (window, window), strides=(window, window))
  return x.reshape(n, h // window, window, w // window, window, c).max(axis=(2, 4))
