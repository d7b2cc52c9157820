import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnist_ten import augment
from mnist_ten.errors import ConfigError

IMAGES = jnp.asarray(np.random.default_rng(0).uniform(size=(8, 28, 28, 1)), jnp.float32)
STRONG = ("affine(rotate=30, shift=0.2, scale=0.2, shear=20, elastic=1.5)|elastic(alpha=2)|"
          "crop(pad=3)|cutout(size=10)|brightness(delta=0.3)|contrast(lower=0.5, upper=1.5)|"
          "noise(std=0.1)")


@pytest.mark.parametrize("spec", STRONG.split("|") + [STRONG])
def test_ops_keep_shape_and_range(spec):
  out = jax.jit(augment.build(spec))(jax.random.key(0), IMAGES)
  assert out.shape == IMAGES.shape
  assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
  assert not np.allclose(out, IMAGES)


def test_augmentation_is_per_example():
  same = jnp.repeat(IMAGES[:1], 8, axis=0)
  out = augment.build(STRONG)(jax.random.key(1), same)
  diffs = [float(jnp.abs(out[0] - out[i]).max()) for i in range(1, 8)]
  assert min(diffs) > 1e-3


def test_zero_affine_is_identity():
  out = augment.build("affine(rotate=0, shift=0, scale=0, shear=0)")(jax.random.key(0), IMAGES)
  np.testing.assert_allclose(out, IMAGES, atol=1e-5)


def test_sampler_matches_dm_pix_affine_transform():
  """The hand-written bilinear sampler (50x faster on CPU) agrees with dm-pix."""
  import dm_pix as pix
  theta = 0.4
  inverse = jnp.array([[jnp.cos(theta), jnp.sin(theta)], [-jnp.sin(theta), jnp.cos(theta)]]) / 1.1
  centre = jnp.array([13.5, 13.5])
  offset = centre - inverse @ (centre + jnp.array([1.5, -2.0]))
  image = IMAGES[0]
  expected = pix.affine_transform(image, jnp.eye(3).at[:2, :2].set(inverse),
                                  offset=jnp.append(offset, 0.0), order=1, mode="constant")
  ys, xs = augment._identity_grid(image.shape)  # pylint: disable=protected-access
  in_y = inverse[0, 0] * ys + inverse[0, 1] * xs + offset[0]
  in_x = inverse[1, 0] * ys + inverse[1, 1] * xs + offset[1]
  got = augment._sample(image, in_y, in_x)  # pylint: disable=protected-access
  # Equal wherever the source point is inside the image; at the border dm-pix's
  # constant mode zeroes a pixel that this sampler blends with the black fill.
  inside = np.asarray((in_y >= 0) & (in_y <= 27) & (in_x >= 0) & (in_x <= 27))
  assert inside.mean() > 0.7
  np.testing.assert_allclose(np.asarray(got)[inside], np.asarray(expected)[inside], atol=1e-5)


def test_affine_rotates_about_the_centre():
  image = jnp.zeros((1, 28, 28, 1)).at[0, 4:24, 13:15, 0].set(1.0)  # a vertical bar
  out = augment.build("affine(rotate=90)")(jax.random.key(0), jnp.repeat(image, 64, 0))
  # Some draw rotates by nearly +-90 degrees: the bar then lies horizontally
  # through the centre.
  horizontal = out[:, 13:15, 4:24, 0].mean((1, 2))
  assert float(horizontal.max()) > 0.8


def test_hflip_only_where_the_dataset_allows_it():
  image = jnp.zeros((16, 28, 28, 1)).at[:, :, :5].set(1.0)
  never = augment.build("hflip", hflip_allowed=False)(jax.random.key(0), image)
  np.testing.assert_array_equal(never, image)
  some = augment.build("hflip", hflip_allowed=True)(jax.random.key(0), image)
  assert not np.array_equal(some, image)


@pytest.mark.parametrize("spec, message", [
    ("rotate_wildly(x=1)", "unknown augmentation 'rotate_wildly'"),
    ("affine(rotate=)", "bad augmentation"),
    ("affine(spin=3)", "augmentation 'affine'"),
])
def test_bad_specs_name_the_problem(spec, message):
  with pytest.raises(ConfigError, match=message):
    augment.build(spec)
