"""The tf.data pipeline: seeded shuffle-repeat-batch as a pure function of
(seed, step), images only in the unlabeled stream, stacked steps, resume
equal to an uninterrupted run, and TensorFlow imported only when chosen."""
import subprocess
import sys

import numpy as np
import pytest

from mnist_ten import input_pipeline
from mnist_ten import parallel
from mnist_ten import tf_pipeline
from mnist_ten import train
from mnist_ten.errors import ConfigError
from tests.conftest import assert_resume_equals_uninterrupted


def _data():
  x = np.zeros((50, 4, 4, 1), np.uint8)
  x[:, 0, 0, 0] = np.arange(50)  # each image names its row
  y = (np.arange(50) % 10).astype(np.int32)
  return input_pipeline.TrainData(labeled_images=x[:10], labeled_labels=y[:10],
                                  unlabeled_images=x[10:])


def _batches(start=0, stop=12, per_step=1, seed=0, data=None):
  return list(tf_pipeline.batches(data or _data(), labeled_size=4, unlabeled_size=8, seed=seed,
                                  start=start, stop=stop, per_step=per_step,
                                  mesh=parallel.make_mesh()))


def test_each_epoch_is_one_permutation_and_the_stream_is_a_function_of_seed_and_step():
  out = _batches()
  assert len(out) == 12 and out[0][0].images.shape == (4, 4, 4, 1)
  assert out[0][0].images.dtype == np.uint8 and out[0][1].labels is None  # images only
  labeled = np.concatenate([np.asarray(b[0].labels) for b in out[:5]])  # 20 = two epochs of 10
  assert np.bincount(labeled[:10]).tolist() == [1] * 10
  assert np.bincount(labeled[10:]).tolist() == [1] * 10
  assert not np.array_equal(labeled[:10], labeled[10:])  # reshuffled each epoch
  unl = np.concatenate([np.asarray(b[1].images)[:, 0, 0, 0] for b in out[:5]])  # 40 = one epoch
  assert sorted(unl.tolist()) == sorted(_data().unlabeled_images[:, 0, 0, 0].tolist())
  # From step 5 on, the same batches as the run from step 0 had there.
  for a, b in zip(out[5:], _batches(start=5)):
    np.testing.assert_array_equal(a[1].images, b[1].images)
    np.testing.assert_array_equal(a[0].labels, b[0].labels)
  assert not np.array_equal(out[0][1].images, _batches(seed=1)[0][1].images)
  stacked = _batches(per_step=3)
  assert len(stacked) == 4 and stacked[0][0].images.shape == (3, 4, 4, 4, 1)
  np.testing.assert_array_equal(stacked[1][0].images[0], out[3][0].images)


def test_each_process_reads_only_its_rows_of_every_global_batch():
  import tensorflow as tf
  images = _data().unlabeled_images

  host = tf_pipeline.host_augmenter("hflip|crop(pad=1)", hflip_allowed=True)

  def rows(process, count, augment=None):
    stream = tf_pipeline._stream(  # pylint: disable=protected-access
        tf, {"images": images}, batch=8, seed=3, stream=tf_pipeline.UNLABELED, start=2,
        stop=7, per_step=1, local=tf_pipeline.process_rows(8, process=process, count=count),
        host_augment=augment)
    return [b["images"] for b in stream.as_numpy_iterator()]
  for augment in (None, host):  # host ops: each image augmented alike over any processes
    whole = rows(0, 1, augment)
    halves = [rows(p, 2, augment) for p in (0, 1)]
    quarters = [rows(p, 4, augment) for p in range(4)]
    assert len(whole) == 5 and all(len(b) == 4 for b in halves[0])
    for step in range(5):  # the processes' rows, in order, are the one-process batch
      np.testing.assert_array_equal(np.concatenate([h[step] for h in halves]), whole[step])
      np.testing.assert_array_equal(np.concatenate([q[step] for q in quarters]), whole[step])
  assert not np.array_equal(np.concatenate(rows(0, 1)), np.concatenate(whole))  # augmented
  with pytest.raises(ConfigError, match="batch of 8 must divide over 3 processes"):
    tf_pipeline.process_rows(8, process=0, count=3)


def test_host_augmentation_draws_per_image_and_resumes_exactly():
  pixels = np.arange(1, 17, dtype=np.uint8).reshape(1, 4, 4, 1)  # no symmetry, no zeros
  data = _data().replace(unlabeled_images=np.repeat(pixels, 40, 0))

  def transform(x, y):  # which flip and one-pixel shift (zeros shifted in) made y from x
    padded = {f: np.pad(x[:, ::-1] if f else x, 1) for f in (0, 1)}
    return next((f, dy, dx) for f in (0, 1) for dy in range(3) for dx in range(3)
                if np.array_equal(padded[f][dy:dy + 4, dx:dx + 4], y))
  def draws(hflip_allowed, start=0):
    return list(tf_pipeline.batches(
        data, labeled_size=4, unlabeled_size=8, seed=0, start=start, stop=12, per_step=1,
        mesh=parallel.make_mesh(), host_augment="hflip|crop(pad=1)",
        hflip_allowed=hflip_allowed))
  shifted = draws(True)
  drawn = [transform(pixels[0, ..., 0], y[..., 0])  # StopIteration: not such a transform
           for _, unl in shifted for y in np.asarray(unl.images)]
  assert len(set(drawn)) >= 12  # of the 18 flips and shifts: drawn per image
  assert {f for f, _, _ in drawn} == {0, 1}
  unflipped = [transform(pixels[0, ..., 0], y[..., 0])
               for _, unl in draws(False) for y in np.asarray(unl.images)]
  assert {f for f, _, _ in unflipped} == {0}  # flips dropped where they change the label
  resumed = draws(True, start=5)
  for a, b in zip(shifted[5:], resumed):
    np.testing.assert_array_equal(a[1].images, b[1].images)
    np.testing.assert_array_equal(a[0].images, b[0].images)


def test_host_augmentation_is_checked_before_anything_runs(toy_config):
  toy_config.data.host_augment = "crop(pad=2)"
  with pytest.raises(ConfigError, match="set data.pipeline='tfdata' too"):
    tf_pipeline.check(toy_config)
  toy_config.data.pipeline = "tfdata"
  tf_pipeline.check(toy_config)
  toy_config.data.host_augment = "hflip|rotate(deg=5)"
  with pytest.raises(ConfigError, match="unknown host augmentation 'rotate'"):
    tf_pipeline.check(toy_config)
  toy_config.data.host_augment = "crop(pad=-1)"
  with pytest.raises(ConfigError, match="pad must be a whole number >= 0"):
    tf_pipeline.check(toy_config)


def test_pseudo_labels_travel_with_their_images():
  data = _data().replace(pseudo_labels=np.arange(40, dtype=np.int32) % 7,
                         pseudo_weights=np.ones(40, np.float32))
  (_, unl), = _batches(stop=1, data=data)
  row = np.asarray(unl.images)[:, 0, 0, 0].astype(int) - 10  # its row among the unlabeled
  np.testing.assert_array_equal(np.asarray(unl.pseudo_labels), row % 7)


@pytest.mark.parametrize("per_step", [1, 3])
def test_a_tfdata_run_resumes_as_if_never_stopped(toy_config, tmp_path, per_step):
  toy_config.data.pipeline = "tfdata"
  toy_config.data.labels_per_class = 3
  toy_config.steps_per_dispatch = per_step
  toy_config.log_every = toy_config.checkpoint_every = 3
  assert_resume_equals_uninterrupted(toy_config, tmp_path)


def test_an_unknown_pipeline_is_refused(toy_config, tmp_path):
  toy_config.data.pipeline = "grpc"
  with pytest.raises(ConfigError, match="data.pipeline must be one of device, tfdata"):
    train.train_and_evaluate(toy_config, tmp_path)


def test_the_device_pipeline_never_imports_tensorflow(toy_idx_dir, tmp_path):
  code = f"""
import sys
from mnist_ten import config as config_lib, train
c = config_lib.base()
c.data.name, c.data.idx_dir = "toy", {str(toy_idx_dir)!r}
c.model = config_lib.model_config("mlp", widths=(8,))
c.num_steps, c.log_every, c.eval_every, c.checkpoint_every = 2, 2, 2, 2
c.batch_size, c.eval_batch_size, c.plots = 8, 20, False
c.augment.labeled = ""
train.train_and_evaluate(c, {str(tmp_path / "run")!r})
assert "tensorflow" not in sys.modules, "TensorFlow was imported"
"""
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
