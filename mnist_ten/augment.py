"""On-device, per-example augmentations as pure JAX functions.

A pipeline is a string of registered ops, big_vision style:

    "affine(rotate=15, shift=0.1, scale=0.1, shear=10, elastic=2)|cutout(size=12)"

Each op maps (key, image HxWxC float in [0, 1]) -> image of the same shape and
range; `build()` turns the string into a function over a batch that draws an
independent key per example (vmap), so it runs inside the jit-compiled step.
"""
import ast
from typing import Callable, List

import dm_pix as pix
import jax
import jax.numpy as jnp

from mnist_ten.errors import ConfigError
from mnist_ten.registry import Registry

Op = Callable[[jax.Array, jax.Array], jax.Array]
OPS: Registry = Registry("augmentation")


def _uniform(key, bound):
  return jax.random.uniform(key, (), minval=-bound, maxval=bound)


def _sample(image, ys, xs):
  """Bilinear sampling of image [H, W, C] at input coordinates ys, xs [H, W],
  zero outside the image.

  Written here rather than using dm-pix's affine_transform/elastic_deformation
  (map_coordinates), which are far slower on CPU: four gathers from the
  flattened image are all XLA needs (timings: docs/speed.md).
  """
  h, w, c = image.shape
  y0, x0 = jnp.floor(ys), jnp.floor(xs)
  wy, wx = ys - y0, xs - x0
  flat = image.reshape(h * w, c)
  out = jnp.zeros_like(image)
  for dy, fy in ((0, 1.0 - wy), (1, wy)):
    for dx, fx in ((0, 1.0 - wx), (1, wx)):
      yy, xx = y0 + dy, x0 + dx
      inside = (yy >= 0) & (yy <= h - 1) & (xx >= 0) & (xx <= w - 1)
      index = (jnp.clip(yy, 0, h - 1) * w + jnp.clip(xx, 0, w - 1)).astype(jnp.int32)
      out = out + flat[index.reshape(-1)].reshape(h, w, c) * (fy * fx * inside)[..., None]
  return out


def _displacement(key, shape, alpha: float, grid: int):
  """A smooth random displacement field [H, W, 2]: normal displacements of
  std `alpha` pixels on a grid x grid lattice, cubically interpolated."""
  coarse = alpha * jax.random.normal(key, (grid, grid, 2))
  return jax.image.resize(coarse, (shape[0], shape[1], 2), "cubic")


def _identity_grid(shape):
  return jnp.meshgrid(jnp.arange(shape[0], dtype=jnp.float32),
                      jnp.arange(shape[1], dtype=jnp.float32), indexing="ij")


@OPS.register("affine")
def affine(*, rotate: float = 0.0, shift: float = 0.0, scale: float = 0.0,
           shear: float = 0.0, elastic: float = 0.0, grid: int = 4) -> Op:
  """Random rotation (degrees), shift (fraction of size), isotropic scale
  (1 +- scale) and shear (degrees) about the image centre, optionally with an
  elastic displacement (see `elastic`) in the same resampling; black fill."""

  def op(key, image):
    h, w = image.shape[:2]
    k_rot, k_shear, k_scale, k_dy, k_dx, k_el = jax.random.split(key, 6)
    theta = jnp.deg2rad(_uniform(k_rot, rotate))
    phi = jnp.deg2rad(_uniform(k_shear, shear))
    s = 1.0 + _uniform(k_scale, scale)
    t = jnp.stack([_uniform(k_dy, shift) * h, _uniform(k_dx, shift) * w])
    rot = jnp.array([[jnp.cos(theta), -jnp.sin(theta)], [jnp.sin(theta), jnp.cos(theta)]])
    shear_m = jnp.array([[1.0, 0.0], [jnp.tan(phi), 1.0]])
    # Output pixel o shows input point F^-1 (o - c - t) + c.
    inverse = jnp.linalg.inv(s * rot @ shear_m)
    centre = jnp.array([(h - 1) / 2.0, (w - 1) / 2.0])
    ys, xs = _identity_grid(image.shape)
    oy, ox = ys - centre[0] - t[0], xs - centre[1] - t[1]
    ys = inverse[0, 0] * oy + inverse[0, 1] * ox + centre[0]
    xs = inverse[1, 0] * oy + inverse[1, 1] * ox + centre[1]
    if elastic:
      d = _displacement(k_el, image.shape, elastic, grid)
      ys, xs = ys + d[..., 0], xs + d[..., 1]
    return _sample(image, ys, xs)
  return op


@OPS.register("elastic")
def elastic(*, alpha: float = 2.0, grid: int = 4) -> Op:
  """Elastic deformation in the spirit of Simard et al. (2003): a smooth random
  displacement field, `alpha` pixels of std on a grid x grid lattice,
  cubically interpolated over the image."""

  def op(key, image):
    ys, xs = _identity_grid(image.shape)
    d = _displacement(key, image.shape, alpha, grid)
    return _sample(image, ys + d[..., 0], xs + d[..., 1])
  return op


@OPS.register("crop")
def crop(*, pad: int = 2) -> Op:
  """Zero-pad by `pad` pixels and crop back at a random position (a shift)."""

  def op(key, image):
    padded = jnp.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    return pix.random_crop(key, padded, image.shape)
  return op


@OPS.register("cutout")
def cutout(*, size: int = 8) -> Op:
  """Zero one size x size square centred anywhere in the image (DeVries 2017)."""

  def op(key, image):
    h, w = image.shape[:2]
    cy = jax.random.randint(key, (), 0, h)
    cx = jax.random.randint(jax.random.fold_in(key, 1), (), 0, w)
    ys, xs = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
    inside = (jnp.abs(ys - cy) <= size // 2) & (jnp.abs(xs - cx) <= size // 2)
    return jnp.where(inside[..., None], 0.0, image)
  return op


@OPS.register("brightness")
def brightness(*, delta: float = 0.2) -> Op:
  return lambda key, image: jnp.clip(pix.random_brightness(key, image, delta), 0.0, 1.0)


@OPS.register("contrast")
def contrast(*, lower: float = 0.6, upper: float = 1.4) -> Op:
  return lambda key, image: jnp.clip(pix.random_contrast(key, image, lower, upper), 0.0, 1.0)


@OPS.register("noise")
def noise(*, std: float = 0.05) -> Op:
  return lambda key, image: jnp.clip(
      image + std * jax.random.normal(key, image.shape), 0.0, 1.0)


@OPS.register("hflip")
def hflip() -> Op:
  """Random horizontal flip; `build` drops it for datasets where flips change
  the label (digits), per `data.hflip`."""
  return lambda key, image: pix.random_flip_left_right(key, image)


def parse(spec: str, what: str = "augmentation") -> List[tuple]:
  """'a(x=1)|b' -> [('a', {'x': 1}), ('b', {})], with literal arguments only
  (also used for other pipeline strings, e.g. graph features)."""
  ops = []
  for part in (p.strip() for p in spec.split("|")):
    if not part or part == "none":
      continue
    try:
      node = ast.parse(part, mode="eval").body
      if isinstance(node, ast.Name):
        ops.append((node.id, {}))
        continue
      if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name) or node.args:
        raise ValueError("expected name(key=value, ...)")
      ops.append((node.func.id, {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}))
    except (SyntaxError, ValueError) as e:
      raise ConfigError(f"bad {what} {part!r} in {spec!r}: {e}") from None
  return ops


def build_ops(spec: str, registry: Registry, *, hflip_allowed: bool,
              what: str = "augmentation") -> List[Callable]:
  """The ops of pipeline string `spec`, each made by its factory in
  `registry`; `hflip` is dropped where flips change the label (data.hflip)."""
  ops = []
  for name, kwargs in parse(spec, what):
    factory = registry.get(name)
    if name == "hflip" and not hflip_allowed:
      continue
    try:
      ops.append(factory(**kwargs))
    except TypeError as e:
      raise ConfigError(f"{what} {name!r}: {e}") from None
  return ops


def build(spec: str, *, hflip_allowed: bool = False) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """Returns augment(key, images NHWC in [0,1]) applying `spec` per example."""
  ops = build_ops(spec, OPS, hflip_allowed=hflip_allowed)

  def one(key, image):
    for i, op in enumerate(ops):
      image = op(jax.random.fold_in(key, i), image)
    return image

  def augment(key, images):
    if not ops:
      return images
    return jax.vmap(one)(jax.random.split(key, images.shape[0]), images)
  return augment

