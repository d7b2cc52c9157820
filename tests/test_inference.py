import json

import numpy as np
import pytest

import mnist_ten
from mnist_ten import datasets
from mnist_ten.errors import WorkdirError


def test_load_classifier_reproduces_the_reported_accuracy(toy_config, tmp_path):
  results = mnist_ten.train_and_evaluate(toy_config, tmp_path)
  clf = mnist_ten.load_classifier(tmp_path)
  test = datasets.load_idx_dir(toy_config.data.idx_dir)
  labels, probs = clf(test.test_images[..., 0])  # [N, H, W] uint8 works too
  assert labels.shape == (100,) and probs.shape == (100, 10)
  np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
  assert np.mean(labels == test.test_labels) == pytest.approx(results["test_accuracy_ema"])
  with pytest.raises(ValueError, match="takes 24x24 images, these are 28x28"):
    clf(np.zeros((2, 28, 28, 1)))
  # No images: every output empty, with the shapes and structure of one.
  none = test.test_images[:0]
  labels, probs = clf(none)
  assert labels.shape == (0,) and probs.shape == (0, 10)
  assert clf.features(none).shape == (0, clf.features(test.test_images[:1]).shape[1])
  one, empty = clf.layers(test.test_images[:1]), clf.layers(none)
  assert isinstance(empty, dict) and empty.keys() == one.keys()
  assert all(empty[k].shape == (0,) + one[k].shape[1:] for k in one)


def test_load_classifier_of_a_voting_run_predicts_as_the_run_was_evaluated(toy_config, tmp_path):
  toy_config.method = "propagate"
  toy_config.augment.strong = "none"
  toy_config.propagate = dict(features="pixels(dim=32)", k=5, iterations=200, keep=1.0, mu=2,
                              lambda_u=1.0, vote=5)
  results = mnist_ten.train_and_evaluate(toy_config, tmp_path)
  test = datasets.load_idx_dir(toy_config.data.idx_dir)
  labels, probs = mnist_ten.load_classifier(tmp_path)(test.test_images)
  np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
  assert np.mean(labels == test.test_labels) == pytest.approx(results["test_accuracy_ema"])
  # vote=False is the network alone, as results.json reports it too.
  alone, _ = mnist_ten.load_classifier(tmp_path, vote=False)(test.test_images)
  assert np.mean(alone == test.test_labels) == pytest.approx(
      results["test_accuracy_network_ema"])


def test_load_classifier_of_knn_run(toy_config, tmp_path):
  toy_config.method = "knn"
  results = mnist_ten.train_and_evaluate(toy_config, tmp_path)
  clf = mnist_ten.load_classifier(tmp_path)
  test = datasets.load_idx_dir(toy_config.data.idx_dir)
  labels, _ = clf(test.test_images)
  assert np.mean(labels == test.test_labels) == pytest.approx(results["test_accuracy_ema"])
  assert json.loads((tmp_path / "results.json").read_text())["steps"] == 0


def test_load_classifier_without_a_run(tmp_path):
  with pytest.raises(WorkdirError, match="holds no run"):
    mnist_ten.load_classifier(tmp_path)


def test_encoder_layers_pool_maps_to_quarters_and_keep_dense_outputs():
  import jax
  from mnist_ten import config as config_lib, inference, models
  model = models.build(config_lib.model_config("lenet"), 10)
  images = np.random.default_rng(0).random((3, 28, 28, 1), np.float32)
  variables = model.init(jax.random.key(0), images)
  layers = inference._encoder_layers(model, variables, images)  # pylint: disable=protected-access
  # conv32 on 28x28 maps, conv64 on 14x14: each averaged over its 4 quarters.
  assert layers["encoder/Conv_0"].shape == (3, 4 * 32)
  assert layers["encoder/Conv_1"].shape == (3, 4 * 64)
  assert layers["encoder/Dense_0"].shape == (3, 128)  # before its ReLU: some < 0
  assert (layers["encoder/Dense_0"] < 0).any() and (layers["encoder"] >= 0).all()
  conv0 = model.apply(variables, images, capture_intermediates=True,
                      mutable=["intermediates"])[1]["intermediates"]["encoder"]["Conv_0"]
  np.testing.assert_allclose(layers["encoder/Conv_0"][:, :32],
                             conv0["__call__"][0][:, :14, :14].mean((1, 2)), rtol=1e-5, atol=1e-6)
  assert "head" not in " ".join(layers)


def test_float_images_outside_zero_one_are_refused(toy_config, tmp_path):
  mnist_ten.train_and_evaluate(toy_config, tmp_path)
  clf = mnist_ten.load_classifier(tmp_path)
  test = datasets.load(toy_config.data)
  labels, _ = clf(test.test_images.astype(np.float32) / 255.0)  # floats in [0, 1]: fine
  assert np.array_equal(labels, clf(test.test_images)[0])
  with pytest.raises(ValueError, match=r"float images must lie in \[0, 1\], these lie in "
                                       r"\[0, 255\]: pass scale=255"):
    clf(test.test_images.astype(np.float32))


def test_load_classifier_of_a_mirror_averaged_run_predicts_as_the_run_was_evaluated(
    toy_config, tmp_path):
  toy_config.data.hflip = "true"  # the toy bars lie along rows: a mirror keeps the class
  toy_config.evals = {"head": {}, "flip": {"every": -1}}
  results = mnist_ten.train_and_evaluate(toy_config, tmp_path)
  assert results["report_eval"] == "flip"
  test = datasets.load_idx_dir(toy_config.data.idx_dir)
  labels, probs = mnist_ten.load_classifier(tmp_path)(test.test_images)
  assert np.mean(labels == test.test_labels) == pytest.approx(results["test_accuracy_ema"])
  _, plain = mnist_ten.load_classifier(tmp_path, mirror=False)(test.test_images)
  _, mirrored = mnist_ten.load_classifier(tmp_path, mirror=False)(test.test_images[:, :, ::-1])
  np.testing.assert_allclose(probs, (plain + mirrored) / 2, atol=1e-5)
