import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from mnist_ten import config as config_lib
from mnist_ten import datasets
from mnist_ten.errors import DataError
from tests.conftest import ROOT, SHARED, write_idx


def test_idx_round_trip(tmp_path):
  array = np.random.default_rng(0).integers(0, 256, (5, 7, 3)).astype(np.uint8)
  for name in ["a.idx.gz", "b.idx"]:
    write_idx(tmp_path / name, array)
    np.testing.assert_array_equal(datasets.read_idx(tmp_path / name), array)


def test_idx_rejects_garbage(tmp_path):
  (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04 not an idx file")
  with pytest.raises(DataError, match="not an IDX file"):
    datasets.read_idx(tmp_path / "bad")


def test_idx_dir_missing_file_names_it(tmp_path):
  with pytest.raises(DataError, match="lacks train-images-idx3-ubyte.gz"):
    datasets.load_idx_dir(tmp_path)


@pytest.mark.skipif(not (SHARED / "data" / "mnist").exists(), reason="no shared MNIST")
def test_shared_mnist_idx_files():
  ds = datasets.load_idx_dir(SHARED / "data" / "mnist")
  assert ds.train_images.shape == (60000, 28, 28, 1) and ds.train_images.dtype == np.uint8
  np.testing.assert_array_equal(np.bincount(ds.train_labels),
                                [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
  np.testing.assert_array_equal(np.bincount(ds.test_labels),
                                [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])


def _data_config(**kw):
  c = config_lib.base().data
  c.update(kw)
  return c


@pytest.mark.parametrize("name,shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3)),
                                        ("svhn_cropped", (32, 32, 3))])
def test_tfds_path_with_mock_data_and_cache(name, shape, tmp_path, monkeypatch):
  tfds = pytest.importorskip("tensorflow_datasets")
  # mock_data stands in for the download: the machine counts as connected.
  monkeypatch.setattr(datasets, "_unreachable", lambda builder: "")
  with tfds.testing.mock_data(num_examples=12):
    ds = datasets.load(_data_config(name=name, cache_dir=str(tmp_path)))
  assert ds.train_images.shape == (12,) + shape and ds.num_classes == 10
  assert (tmp_path / f"{name}.npz").exists()
  cached = datasets.load(_data_config(name=name, cache_dir=str(tmp_path)))
  np.testing.assert_array_equal(cached.test_labels, ds.test_labels)


def test_cached_data_needs_no_tensorflow(tmp_path):
  """With the array cache, loading and a training step never import TensorFlow."""
  arrays = np.random.default_rng(0).integers(0, 255, (40, 28, 28, 1)).astype(np.uint8)
  datasets.save_cache(datasets.Dataset("mnist", arrays, np.arange(40) % 10, arrays[:20],
                                       np.arange(20) % 10, 10), tmp_path)
  script = f"""
import sys
from mnist_ten import config, datasets
ds = datasets.load(config.base().data.copy_and_resolve_references() if False else
                   __import__('ml_collections').ConfigDict(dict(config.base().data,
                   cache_dir={str(tmp_path)!r})))
assert ds.train_images.shape == (40, 28, 28, 1)
from mnist_ten import train
c = config.base()
c.data.cache_dir = {str(tmp_path)!r}
c.model = config.model_config("mlp", widths=(8,))
c.batch_size, c.eval_batch_size = 8, 10
c.num_steps = c.log_every = c.eval_every = c.checkpoint_every = 2
train.train_and_evaluate(c, {str(tmp_path / "run")!r})
assert 'tensorflow' not in sys.modules, 'tensorflow was imported'
assert 'tensorflow_datasets' not in sys.modules, 'tfds was imported'
print('ok')
"""
  out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                       text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
  assert out.returncode == 0, out.stderr[-2000:]


def test_missing_dataset_offline_says_where_and_how(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  with pytest.raises(DataError) as e:
    datasets.load(_data_config(name="mnist", data_dir=str(tmp_path / "empty"),
                               cache_dir=str(tmp_path / "cache"), download=False))
  message = str(e.value)
  assert str(tmp_path / "empty") in message and "TFDS_DATA_DIR" in message
  assert "idx_dir" in message


def test_unknown_dataset_name(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  with pytest.raises(DataError, match="unknown dataset 'mnisst'.*did you mean mnist"):
    datasets.load(_data_config(name="mnisst", cache_dir=str(tmp_path)))


def test_hflip_setting():
  assert not datasets.hflip_allowed(ml_collections.ConfigDict(dict(name="mnist", hflip="auto")))
  assert datasets.hflip_allowed(ml_collections.ConfigDict(dict(name="fashion_mnist", hflip="auto")))
  assert datasets.hflip_allowed(ml_collections.ConfigDict(dict(name="mnist", hflip="true")))
