"""The quadrant toy task: 2-D points by name, their labels, the methods that
refuse points, and the configs end to end with their decision-region plot."""
import json

import numpy as np
import pytest

from mnist_ten import config as config_lib
from mnist_ten import datasets
from mnist_ten import methods
from mnist_ten import train
from mnist_ten.errors import ConfigError


def _data(**synthetic):
  c = config_lib.base().data
  c.name = "quadrants"
  c.synthetic = synthetic
  return datasets.load(c)


def test_each_point_is_labelled_by_its_quadrant_and_the_draws_are_seeded():
  data = _data(num_train=3000, num_test=500, seed=3)
  assert data.train_images.shape == (3000, 1, 1, 2) and data.test_images.shape == (500, 1, 1, 2)
  assert data.num_classes == 4 and datasets.is_points(data)
  for images, labels in ((data.train_images, data.train_labels),
                         (data.test_images, data.test_labels)):
    x, y = datasets.pixels_to_points(images).T
    np.testing.assert_array_equal(labels, 2 * (x >= 0) + (y >= 0))
    assert np.bincount(labels).min() > 0.2 * len(labels)  # uniform: about a quarter each
  again = _data(num_train=3000, num_test=500, seed=3)
  np.testing.assert_array_equal(again.train_images, data.train_images)
  assert not np.array_equal(_data(num_train=3000, num_test=500, seed=4).train_images,
                            data.train_images)
  assert not np.array_equal(data.train_images[:500], data.test_images)  # drawn apart
  # The grid keeps each point's side of 0 exactly (levels 127 | 128).
  edge = datasets.points_to_pixels(np.array([[-1e-9, 0.0], [-1.0, 1.0]]))
  assert edge.reshape(-1).tolist() == [127, 128, 0, 255]
  with pytest.raises(ConfigError, match="data.synthetic for 'quadrants'"):
    _data(num_points=5)


def test_points_refuse_image_augmentations_and_image_methods():
  ctx = methods.Context(num_classes=4, hflip_allowed=False, image_shape=(1, 1, 2))
  assert ctx.augmenter("") is not None
  with pytest.raises(ConfigError, match="needs images, and this dataset's examples are 2-D "
                                        "points: set the config.augment entries"):
    ctx.augmenter("affine(rotate=10)")
  for method in ("simclr", "rotation"):
    c = config_lib.base()
    c.method = method
    with pytest.raises(ConfigError, match=f"method '{method}' needs images"):
      methods.build(c, ctx)


@pytest.mark.parametrize("preset", ["mlp2,quick", "semi=propagate,quick"])
def test_quadrant_configs_train_and_draw_their_decision_regions(preset, tmp_path):
  from configs import quadrants
  c = quadrants.get_config(preset)
  c.data.synthetic.num_train = c.data.synthetic.num_test = 1000
  results = train.train_and_evaluate(c, tmp_path)
  assert results["dataset"] == "quadrants"
  # 100 steps: far from the goal, far above chance (0.25).
  assert results["test_accuracy_ema"] > (0.8 if "semi" in preset else 0.9)
  assert (tmp_path / "plots" / "decision_regions.png").stat().st_size > 10_000
  split = json.loads((tmp_path / "split.json").read_text())
  assert len(split["labeled"]) == (4 if "semi" in preset else 1000)
