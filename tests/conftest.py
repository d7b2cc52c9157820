"""Shared fixtures: a tiny synthetic IDX dataset and a tiny config, so most
tests run in seconds without TFDS; the real MNIST is used where it matters."""
import gzip
import os
import pathlib
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))  # configs/ and launch.py live at the top level


def write_idx(path, array):
  """Writes `array` (uint8) as an IDX file, gzipped when path ends in .gz."""
  header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
      int(d).to_bytes(4, "big") for d in array.shape)
  opener = gzip.open if str(path).endswith(".gz") else open
  with opener(path, "wb") as f:
    f.write(header + np.ascontiguousarray(array, np.uint8).tobytes())


def make_toy_arrays(n_train=300, n_test=100, size=24, num_classes=10, seed=0):
  """Class c is a bright bar at a class-specific place plus noise: learnable in
  a few steps, so tests can tell training from noise."""
  rng = np.random.default_rng(seed)

  def draw(n):
    labels = np.arange(n) % num_classes
    rng.shuffle(labels)
    images = rng.integers(0, 60, (n, size, size)).astype(np.uint8)
    for i, c in enumerate(labels):
      row = 1 + 2 * c
      images[i, row:row + 2, 2:size - 2] = 255
    return images, labels.astype(np.uint8)
  return draw(n_train), draw(n_test)


@pytest.fixture(scope="session")
def toy_idx_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp("toy_idx")
  (tr_x, tr_y), (te_x, te_y) = make_toy_arrays()
  write_idx(d / "train-images-idx3-ubyte.gz", tr_x)
  write_idx(d / "train-labels-idx1-ubyte.gz", tr_y)
  write_idx(d / "t10k-images-idx3-ubyte.gz", te_x)
  write_idx(d / "t10k-labels-idx1-ubyte.gz", te_y)
  return d


@pytest.fixture
def toy_config(toy_idx_dir):
  """A config that trains an MLP for a few steps on the toy data."""
  return toy_config_for(toy_idx_dir)


def toy_config_for(toy_idx_dir):
  from mnist_ten import config as config_lib
  c = config_lib.base()
  c.name = "toy"
  c.data.name = "toy"
  c.data.idx_dir = str(toy_idx_dir)
  c.model = config_lib.model_config("mlp", widths=(32,))
  c.batch_size = 16
  c.augment.labeled = "affine(rotate=5, shift=0.05)"
  c.optim.lr = 0.1
  c.num_steps = 6
  c.log_every = 2
  c.eval_every = 6
  c.checkpoint_every = 3
  c.eval_batch_size = 20
  c.plots = False  # drawn and checked in test_plots.py; seconds per run elsewhere
  return c


@pytest.fixture(scope="session")
def mnist_data_overrides():
  """How to reach the real MNIST here: TFDS_DATA_DIR if set (CI sets it), else
  the shared IDX files; skips when neither exists."""
  if os.environ.get("TFDS_DATA_DIR") and pathlib.Path(os.environ["TFDS_DATA_DIR"], "mnist").exists():
    return {}
  if (SHARED / "data" / "mnist").exists():
    return {"idx_dir": str(SHARED / "data" / "mnist")}
  pytest.skip("no MNIST here: set TFDS_DATA_DIR or provide ../shared/data/mnist")


def assert_resume_equals_uninterrupted(config, tmp_path):
  """Trains `config` to the end, then again from a copy cut back to its
  step-3 checkpoint (the final checkpoint dropped, a half-written one left,
  as a kill while saving leaves them), and checks both end bit-identical."""
  import shutil
  import jax
  from mnist_ten import checkpoint, train
  full = train.train_and_evaluate(config, tmp_path / "full")
  shutil.copytree(tmp_path / "full", tmp_path / "cut")
  shutil.rmtree(tmp_path / "cut" / "checkpoints" / "6")
  (tmp_path / "cut" / "results.json").unlink()
  (tmp_path / "cut" / "checkpoints" / "6.orbax-checkpoint-tmp-1234").mkdir()
  assert checkpoint.Checkpointer(tmp_path / "cut" / "checkpoints", read_only=True).latest_step() == 3
  resumed = train.train_and_evaluate(config, tmp_path / "cut")
  assert not list((tmp_path / "cut" / "checkpoints").glob("*.orbax-checkpoint-tmp*"))
  assert resumed["test_accuracy_ema"] == full["test_accuracy_ema"]
  a = checkpoint.Checkpointer(tmp_path / "full" / "checkpoints").restore_raw()
  b = checkpoint.Checkpointer(tmp_path / "cut" / "checkpoints").restore_raw()
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
