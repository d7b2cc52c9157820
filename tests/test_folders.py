"""Image-folder datasets: a folder of PNGs with labels.csv (and test.csv),
class names kept through training and loading, the cache that notices a
changed folder, and one clear message per bad folder."""
import json
import os
import time

import numpy as np
import pytest
from PIL import Image

import mnist_ten
from mnist_ten import config as config_lib
from mnist_ten import datasets
from mnist_ten import folders
from mnist_ten import train
from mnist_ten.errors import ConfigError, DataError

NAMES = ["top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
         "boot"]


def _write_folder(root, images, labels, *, unlabeled=0, test=None, names=NAMES):
  """PNGs + labels.csv: the first `unlabeled` rows without labels; `test`:
  (images, labels) for test.csv."""
  root.mkdir(parents=True, exist_ok=True)
  files = []
  for i, image in enumerate(images):
    name = f"img_{i:04d}.png"
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(root / name)
    files.append(name)
  folders.write_labels_csv(root / "labels.csv", files,
                           ["" if i < unlabeled else names[y] for i, y in enumerate(labels)])
  if test is not None:
    tfiles = []
    for i, image in enumerate(test[0]):
      name = f"test_{i:04d}.png"
      Image.fromarray(image[..., 0]).save(root / name)
      tfiles.append(name)
    folders.write_labels_csv(root / "test.csv", tfiles, [names[y] for y in test[1]])
  return files


def _data_config(root, **kw):
  c = config_lib.base().data
  c.name, c.dir = "folder", str(root)
  for k, v in kw.items():
    c[k] = v
  return c


@pytest.fixture
def fashion(toy_config):
  toy = datasets.load(toy_config.data)  # 24x24 grey toy images, 10 classes
  return toy


def test_a_folder_loads_with_its_class_names_unlabeled_rows_and_test_csv(fashion, tmp_path,
                                                                         monkeypatch):
  monkeypatch.setenv("MNIST_TEN_CACHE", str(tmp_path / "cache"))
  x, y = fashion.train_images[:120], fashion.train_labels[:120]
  _write_folder(tmp_path / "f", x, y, unlabeled=60,
                test=(fashion.test_images[:30], fashion.test_labels[:30]))
  data = datasets.load(_data_config(tmp_path / "f"))
  assert data.class_names == tuple(sorted(NAMES)) and data.num_classes == 10
  assert data.train_images.shape == (120, 24, 24, 1) and data.test_images.shape[0] == 30
  np.testing.assert_array_equal(data.train_images, x)  # PNG is lossless
  assert (data.train_labels[:60] == folders.UNLABELED).all()
  index = {n: i for i, n in enumerate(sorted(NAMES))}
  np.testing.assert_array_equal(data.train_labels[60:], [index[NAMES[v]] for v in y[60:]])
  # Cached: a second load reads no image; touching a file reads the folder again.
  cached = datasets.load(_data_config(tmp_path / "f"))
  np.testing.assert_array_equal(cached.train_images, data.train_images)
  assert cached.class_names == data.class_names
  assert len(list((tmp_path / "cache").glob("folder_*.npz"))) == 1
  image = np.zeros((24, 24), np.uint8)
  Image.fromarray(image).save(tmp_path / "f" / "img_0000.png")
  os.utime(tmp_path / "f" / "img_0000.png", (time.time() + 5, time.time() + 5))
  changed = datasets.load(_data_config(tmp_path / "f"))
  assert not changed.train_images[0].any()
  # Resized and in colour when asked.
  rgb = datasets.load(_data_config(tmp_path / "f", image_size=(16, 12), color="rgb"))
  assert rgb.train_images.shape == (120, 16, 12, 3)


def test_colour_jpegs_are_detected_and_an_unchanged_folder_is_not_decoded_again(
    tmp_path, monkeypatch):
  monkeypatch.setenv("MNIST_TEN_CACHE", str(tmp_path / "cache"))
  rng = np.random.default_rng(0)
  root = tmp_path / "faces"
  root.mkdir()
  files, labels = [], []
  for i in range(12):  # flat colours survive JPEG: red faces are "female", blue "male"
    colour = [200, 30, 30] if i % 2 else [30, 30, 200]
    image = np.clip(np.full((20, 16, 3), colour) + rng.integers(-5, 6, (20, 16, 3)), 0, 255)
    Image.fromarray(image.astype(np.uint8)).save(root / f"face_{i}.jpg", quality=95)
    files.append(f"face_{i}.jpg")
    labels.append("" if i >= 8 else ("female" if i % 2 else "male"))
  folders.write_labels_csv(root / "labels.csv", files, labels)
  decodes = []
  real_decode = folders._decode  # pylint: disable=protected-access
  monkeypatch.setattr(folders, "_decode", lambda *a: decodes.append(a) or real_decode(*a))
  data = datasets.load(_data_config(root, test_fraction=0.25))  # color="auto"
  assert data.train_images.shape[1:] == (20, 16, 3) and data.class_names == ("female", "male")
  red_minus_blue = data.train_images[..., 0].mean((1, 2)) - data.train_images[..., 2].mean((1, 2))
  assert (np.abs(red_minus_blue) > 100).all()  # each image red or blue: kept in colour
  assert len(decodes) == 12
  again = datasets.load(_data_config(root, test_fraction=0.25))
  assert len(decodes) == 12  # served from the cache: no image decoded
  np.testing.assert_array_equal(again.train_images, data.train_images)


def test_share_warnings_and_per_class_logs_name_the_classes(fashion, tmp_path, monkeypatch):
  from mnist_ten import shares
  found = shares.warnings(np.array([0.05, 0.95]), np.array([0.5, 0.5]), "the pseudo-labels",
                          1 / 3, 2.0, names=("female", "male"))
  assert found[0].startswith("class female holds 5.0%")
  assert shares.format_shares(np.array([0.25, 0.75]), ("female", "male")) == \
      "female:25.0% male:75.0%"
  assert shares.format_shares(np.array([0.25, 0.75])) == "0:25.0% 1:75.0%"


def test_bad_folders_name_the_problem(fashion, tmp_path):
  x, y = fashion.train_images[:20], fashion.train_labels[:20]
  root = tmp_path / "f"
  _write_folder(root, x, y)
  with pytest.raises(DataError, match="has no labels.csv"):
    datasets.load(_data_config(tmp_path))
  (root / "img_0003.png").unlink()
  with pytest.raises(DataError, match=r"labels.csv, line 5: 'img_0003.png' does not exist"):
    datasets.load(_data_config(root))
  (root / "img_0003.png").write_bytes(b"not a png")
  with pytest.raises(DataError, match=r"line 5: 'img_0003.png' cannot be decoded as an image"):
    datasets.load(_data_config(root))
  _write_folder(root, x, y)
  folders.write_labels_csv(root / "test.csv", ["img_0001.png"], ["jacket"])
  with pytest.raises(DataError, match=r"test.csv, line 2: class 'jacket' has no labeled image"):
    datasets.load(_data_config(root))
  (root / "test.csv").unlink()
  # The one labeled image (a 'top') is held out as the test set: none is left to train on.
  folders.write_labels_csv(root / "labels.csv", [f"img_{i:04d}.png" for i in range(20)],
                           ["top"] + [""] * 19)
  with pytest.raises(DataError, match=r"'top' of .* have no labeled train image left"):
    datasets.load(_data_config(root, test_fraction=0.5))
  folders.write_labels_csv(root / "labels.csv", [], [])
  with pytest.raises(DataError, match="lists no image: the folder dataset is empty"):
    datasets.load(_data_config(root))
  with pytest.raises(ConfigError, match="needs data.dir"):
    datasets.load(_data_config(""))


@pytest.mark.parametrize("config_file", ["supervised", "default"])
def test_a_folder_trains_end_to_end_and_loads_with_its_names(config_file, fashion, tmp_path,
                                                              monkeypatch):
  monkeypatch.setenv("MNIST_TEN_CACHE", str(tmp_path / "cache"))
  x, y = fashion.train_images[:300], fashion.train_labels[:300]
  _write_folder(tmp_path / "f", x, y, unlabeled=200)
  module = __import__(f"configs.{config_file}", fromlist=["get_config"])
  c = module.get_config("quick" if config_file == "supervised" else "quick,rounds=1")
  c.data = _data_config(tmp_path / "f", labels_per_class=1, test_fraction=0.3)
  c.model = config_lib.model_config("lenet")
  c.plots = False
  stage = c
  while stage.get("method"):
    stage.data = c.data
    stage.model = c.model
    if stage.method == "propagate":
      stage.propagate.features = "pixels(dim=16)"
    stage = stage.pretrain
  results = train.train_and_evaluate(c, tmp_path / "run")
  split = json.loads((tmp_path / "run" / "split.json").read_text())
  assert split["class_names"] == sorted(NAMES)
  assert len(split["labeled"]) == 10
  data = datasets.load(c.data)
  # 300 rows: 100 labeled, 30 of them held out as the test set; 10 drawn, the rest unlabeled.
  assert data.train_images.shape[0] == 270 and split["num_unlabeled"] == 260
  assert (data.train_labels[split["labeled"]] >= 0).all()  # only labeled rows are drawn
  clf = mnist_ten.load_classifier(tmp_path / "run")
  assert clf.class_names == tuple(sorted(NAMES))
  assert 0.0 <= results["test_accuracy_ema"] <= 1.0


def test_a_binary_folder_with_most_images_unlabeled(fashion, tmp_path, monkeypatch):
  """The seed project's shape: two classes (its gender classifier), a few
  labeled rows, the rest unlabeled."""
  monkeypatch.setenv("MNIST_TEN_CACHE", str(tmp_path / "cache"))
  keep = np.flatnonzero(fashion.train_labels < 2)[:60]
  x, y = fashion.train_images[keep], fashion.train_labels[keep]
  _write_folder(tmp_path / "f", x, y, unlabeled=40, names=["female", "male"])
  c = config_lib.base()
  c.data = _data_config(tmp_path / "f", labels_per_class=-1, test_fraction=0.25)
  c.model = config_lib.model_config("mlp", widths=(32,))
  c.num_steps, c.log_every, c.eval_every, c.checkpoint_every = 10, 5, 10, 10
  c.eval_batch_size, c.batch_size, c.plots = 5, 8, False
  results = train.train_and_evaluate(c, tmp_path / "run")
  split = json.loads((tmp_path / "run" / "split.json").read_text())
  assert split["class_names"] == ["female", "male"] and split["num_classes"] == 2
  assert len(split["labeled"]) == 15 and split["num_unlabeled"] == 40  # 20 labeled, 5 tested
  assert results["dataset"] == "folder:f"


def test_an_exported_dataset_reads_back_identical(toy_config, tmp_path, monkeypatch):
  """experiments/export_folder.py: the folder holds the same images and labels
  in the same order, so a seed draws the same labeled images from either."""
  from experiments import export_folder
  monkeypatch.setenv("MNIST_TEN_CACHE", str(tmp_path / "cache"))
  counts = export_folder.export(toy_config.data, tmp_path / "f", unlabeled_share=0.25)
  toy = datasets.load(toy_config.data)
  back = datasets.load(_data_config(tmp_path / "f"))
  np.testing.assert_array_equal(back.train_images, toy.train_images)
  np.testing.assert_array_equal(back.test_images, toy.test_images)
  np.testing.assert_array_equal(back.test_labels, toy.test_labels)
  hidden = back.train_labels == folders.UNLABELED
  assert hidden.sum() == counts["unlabeled"] == round(0.25 * toy.train_labels.size)
  np.testing.assert_array_equal(back.train_labels[~hidden], toy.train_labels[~hidden])
  with pytest.raises(ConfigError, match="is not empty"):
    export_folder.export(toy_config.data, tmp_path / "f")
