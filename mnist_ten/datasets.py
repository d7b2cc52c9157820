"""Image-classification datasets as numpy arrays, from TFDS, IDX files or a cache.

TensorFlow (through TFDS) is imported only when a dataset has to be fetched or
prepared. The arrays are then cached as `.npz`, so training runs on machines
without TensorFlow (most GPU/TPU images): copy the cache file there, or point
`data.idx_dir` at the four MNIST-format IDX files.
"""
import dataclasses
import difflib
import gzip
import os
import pathlib
import socket
import urllib.parse
from typing import Optional, Tuple

import numpy as np

from mnist_ten.errors import ConfigError, DataError
from mnist_ten.registry import Registry

# Datasets whose classes are not mirror-symmetric must never be flipped
# (a flipped 2 or 7 is not a digit). Unknown datasets default to "no flips";
# `data.hflip` overrides.
HFLIP_ALLOWED = {"fashion_mnist": True, "cifar10": True, "cifar100": True,
                 "svhn_cropped": False, "mnist": False, "emnist": False,
                 "kmnist": False}

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A dataset with its train and test splits, images as uint8 NHWC."""
  name: str
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  num_classes: int
  # Bags of instances (`make_bags`): each test bag's instance labels [N, L],
  # -1 at padding. For scoring instance predictions only, never for training.
  test_instance_labels: Optional[np.ndarray] = None
  # Names of the classes, when the data has them (image folders: the labels as written).
  class_names: Optional[Tuple[str, ...]] = None

  @property
  def image_shape(self) -> Tuple[int, int, int]:
    return tuple(self.train_images.shape[1:])


def default_cache_dir() -> pathlib.Path:
  return pathlib.Path(os.environ.get(
      "MNIST_TEN_CACHE", pathlib.Path.home() / ".cache" / "mnist_ten"))


def read_idx(path) -> np.ndarray:
  """Reads one IDX file (optionally gzipped), as LeCun's MNIST format defines."""
  path = pathlib.Path(path)
  opener = gzip.open if path.suffix == ".gz" else open
  with opener(path, "rb") as f:
    data = f.read()
  if len(data) < 4 or data[0] != 0 or data[1] != 0:
    raise DataError(f"{path} is not an IDX file (bad magic number)")
  dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4",
            0x0D: ">f4", 0x0E: ">f8"}
  if data[2] not in dtypes:
    raise DataError(f"{path}: unknown IDX element type 0x{data[2]:02x}")
  ndim = data[3]
  shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
  array = np.frombuffer(data, dtype=dtypes[data[2]], offset=4 + 4 * ndim)
  if array.size != int(np.prod(shape)):
    raise DataError(f"{path}: header says shape {shape} but holds {array.size} values")
  return array.reshape(shape)


def load_idx_dir(idx_dir, name: str = "mnist") -> Dataset:
  idx_dir = pathlib.Path(idx_dir)
  arrays = {}
  for key, filename in IDX_FILES.items():
    path = idx_dir / filename
    if not path.exists() and (idx_dir / filename[:-3]).exists():
      path = idx_dir / filename[:-3]  # unzipped copies work too
    if not path.exists():
      raise DataError(f"data.idx_dir={str(idx_dir)!r} lacks {filename}; it must hold "
                      f"the four IDX files: {', '.join(IDX_FILES.values())}")
    arrays[key] = read_idx(path)
  for split in ("train", "test"):
    images = arrays[f"{split}_images"]
    if images.ndim == 3:
      arrays[f"{split}_images"] = images[..., None]
    arrays[f"{split}_labels"] = arrays[f"{split}_labels"].astype(np.int32)
  num_classes = int(max(arrays["train_labels"].max(), arrays["test_labels"].max())) + 1
  return Dataset(name=name, num_classes=num_classes, **arrays)


def _cache_path(cache_dir, name: str) -> pathlib.Path:
  return pathlib.Path(cache_dir) / f"{name.replace('/', '__')}.npz"


def save_cache(dataset: Dataset, cache_dir) -> pathlib.Path:
  path = _cache_path(cache_dir, dataset.name)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")  # one per process: two may fill it at once
  np.savez_compressed(tmp, train_images=dataset.train_images,
                      train_labels=dataset.train_labels,
                      test_images=dataset.test_images,
                      test_labels=dataset.test_labels,
                      num_classes=dataset.num_classes)
  os.replace(tmp, path)  # atomic: a killed process never leaves half a cache
  return path


def load_cache(cache_dir, name: str) -> Optional[Dataset]:
  path = _cache_path(cache_dir, name)
  if not path.exists():
    return None
  with np.load(path) as z:
    return Dataset(name=name, train_images=z["train_images"],
                   train_labels=z["train_labels"], test_images=z["test_images"],
                   test_labels=z["test_labels"], num_classes=int(z["num_classes"]))


def _missing_data_message(name: str, data_dir, cache_dir, reason: str) -> str:
  return (f"dataset {name!r} could not be loaded: {reason}\n"
          f"  looked in: TFDS data dir {data_dir!s} and array cache "
          f"{_cache_path(cache_dir, name)}\n"
          f"  to provide it: on a connected machine TFDS downloads it; offline, set "
          f"TFDS_DATA_DIR (or --config.data.data_dir) to a folder holding a prepared "
          f"'{name}', or for MNIST-format data set --config.data.idx_dir to a folder of "
          f"the four IDX .gz files, or copy {_cache_path(cache_dir, name).name} into "
          f"the cache dir.")


def _unreachable(builder) -> str:
  """Why none of the hosts TFDS would download `builder` from can be
  reached ('' when one can): without it an offline machine waits minutes in
  TFDS's retries. Behind a proxy the hosts cannot be judged from here."""
  if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
    return ""
  try:
    urls = list(builder.url_infos or {})
  except Exception:  # pylint: disable=broad-except
    urls = []
  hosts = sorted({urllib.parse.urlparse(u).hostname for u in urls} - {None}
                 | {"storage.googleapis.com"})  # TFDS's own copies of prepared datasets
  reasons = []
  for host in hosts:
    try:
      socket.create_connection((host, 443), timeout=3).close()
      return ""
    except OSError as e:
      reasons.append(f"{host}: {e.strerror or type(e).__name__}")
  return "; ".join(reasons)


def load_tfds(name: str, data_dir=None, download: bool = True,
              cache_dir=None) -> Dataset:
  """Loads a TFDS image-classification dataset with `image` and `label` features."""
  cache_dir = cache_dir or default_cache_dir()
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise DataError(_missing_data_message(
        name, data_dir, cache_dir,
        f"tensorflow-datasets cannot be imported here ({e}) and no cached arrays "
        "exist")) from None
  data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or None
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    close = difflib.get_close_matches(name, tfds.list_builders(), n=3)
    raise DataError(f"unknown dataset {name!r}: TFDS has no dataset of that name"
                    + (f"; did you mean {', '.join(close)}?" if close else "")) from None
  except Exception as e:  # e.g. a malformed name or version
    raise DataError(f"dataset {name!r}: {type(e).__name__}: {e}") from None
  features = builder.info.features
  if "image" not in features or "label" not in features:
    raise DataError(f"dataset {name!r} has features {list(features)}; an image "
                    "classification dataset needs 'image' and 'label'")
  if not builder.is_prepared():
    if not download:
      raise DataError(_missing_data_message(
          name, builder.data_dir, cache_dir,
          "it is not prepared there and data.download=False"))
    offline = _unreachable(builder)
    if offline:
      raise DataError(_missing_data_message(
          name, builder.data_dir, cache_dir,
          f"it is not prepared there and the network is unreachable ({offline}); with "
          "data.download=False this fails at once, without trying the network"))
    try:
      builder.download_and_prepare()
    except Exception as e:  # offline: DNS/connection errors of many kinds
      raise DataError(_missing_data_message(
          name, builder.data_dir, cache_dir,
          f"downloading failed ({type(e).__name__}: {str(e)[:200]})")) from None
  splits = list(builder.info.splits)
  if splits and not {"train", "test"} <= set(splits):  # empty under tfds.testing.mock_data
    raise DataError(f"dataset {name!r} has splits {splits}; 'train' and 'test' are needed")
  arrays = {}
  for split in ("train", "test"):
    # Large batches rather than batch_size=-1, which aborts inside TF 2.21
    # under tfds.testing.mock_data.
    batches = list(tfds.as_numpy(builder.as_dataset(split=split, batch_size=10_000)))
    arrays[f"{split}_images"] = np.concatenate([b["image"] for b in batches]).astype(np.uint8)
    arrays[f"{split}_labels"] = np.concatenate([b["label"] for b in batches]).astype(np.int32)
  if arrays["train_images"].ndim != 4:
    raise DataError(f"dataset {name!r}: images must share one HxWxC shape, got "
                    f"{arrays['train_images'].shape}")
  return Dataset(name=name, num_classes=int(features["label"].num_classes), **arrays)


# Datasets drawn from a seed, by name: fn(**data.synthetic) -> Dataset.
SYNTHETIC: Registry = Registry("synthetic dataset")


def points_to_pixels(points: np.ndarray) -> np.ndarray:
  """Points of [-1, 1]^2 as the [N, 1, 1, 2] uint8 "images" every model and
  method reads: 256 levels an axis, split at 0 between levels 127 and 128,
  so that a point's side of each axis (its quadrant) is kept exactly."""
  levels = np.floor((np.asarray(points, np.float64) + 1.0) * 128.0)
  return np.clip(levels, 0, 255).astype(np.uint8).reshape(-1, 1, 1, 2)


def pixels_to_points(pixels: np.ndarray) -> np.ndarray:
  """The centres of the levels `points_to_pixels` gave: [N, 2] in [-1, 1]."""
  return (np.asarray(pixels, np.float64).reshape(-1, 2) + 0.5) / 128.0 - 1.0


@SYNTHETIC.register("quadrants")
def quadrants(num_train: int = 4000, num_test: int = 4000, seed: int = 0) -> Dataset:
  """Points uniform in [-1, 1]^2; the class is the quadrant: 0 for x < 0,
  y < 0; 1 for x < 0, y >= 0; 2 for x >= 0, y < 0; 3 for x >= 0, y >= 0.
  Train and test are drawn separately from one seed."""
  if num_train < 4 or num_test < 1:
    raise ConfigError(f"data.synthetic: quadrants needs num_train >= 4 and num_test >= 1, "
                      f"got {num_train} and {num_test}")
  rng = np.random.default_rng(seed)

  def draw(n):
    points = rng.uniform(-1.0, 1.0, (n, 2))
    labels = 2 * (points[:, 0] >= 0) + (points[:, 1] >= 0)
    return points_to_pixels(points), labels.astype(np.int32)
  (train_x, train_y), (test_x, test_y) = draw(num_train), draw(num_test)
  return Dataset("quadrants", train_x, train_y, test_x, test_y, num_classes=4)


def is_points(dataset_or_shape) -> bool:
  """Whether the data are 2-D points (no image to augment), not images."""
  shape = getattr(dataset_or_shape, "image_shape", dataset_or_shape)
  return tuple(shape)[:2] == (1, 1)


# Bags of instances for multiple-instance learning (Ilse et al. 2018): a bag
# is stored as one "image" [L, H, W, C + 1], its instances padded to the
# longest bag L; the extra channel is the instance mask (255: an instance,
# 0: padding), so bags travel through the sampler and evaluators as images do.


def draw_bags(labels: np.ndarray, num_bags: int, *, mean: float, std: float, target: int,
              rng: np.random.Generator, max_size: int = 0):
  """Instance indices [num_bags, L] (-1: padding) and bag labels [num_bags].

  Sizes are round(N(mean, std)), at least 1 (and at most `max_size` when it
  is > 0). Half the bags, in random order, are positive: their instances are
  drawn uniformly and, when none is a `target`, one of them is replaced by a
  target instance; a negative bag's instances are drawn from the others.
  Within a bag no instance repeats."""
  sizes = np.maximum(1, np.round(rng.normal(mean, std, num_bags))).astype(np.int64)
  if max_size > 0:
    sizes = np.minimum(sizes, max_size)
  bag_labels = rng.permutation(np.arange(num_bags) < (num_bags + 1) // 2).astype(np.int32)
  targets, others = np.flatnonzero(labels == target), np.flatnonzero(labels != target)
  index = np.full((num_bags, int(sizes.max())), -1, np.int64)
  for i, (size, positive) in enumerate(zip(sizes, bag_labels)):
    if positive:
      bag = rng.choice(labels.shape[0], size, replace=False)
      if not np.isin(bag, targets).any():
        bag[rng.integers(size)] = rng.choice(targets)
    else:
      bag = rng.choice(others, size, replace=False)
    index[i, :size] = bag
  return index, bag_labels


def pack_bags(images: np.ndarray, index: np.ndarray) -> np.ndarray:
  """uint8 bags [N, L, H, W, C + 1] of the instances `index` names (-1: padding)."""
  mask = index >= 0
  bags = np.where(mask[..., None, None, None], images[np.maximum(index, 0)], 0)
  channel = np.broadcast_to((255 * mask).astype(np.uint8)[..., None, None, None],
                            bags.shape[:-1] + (1,))
  return np.concatenate([bags.astype(np.uint8), channel], axis=-1)


def unpack_bags(bags):
  """(instances [N, L, H, W, C], mask [N, L] bool) of packed bags (numpy or
  jax arrays, uint8 or the float pixels the models see)."""
  return bags[..., :-1], bags[:, :, 0, 0, -1] > 0


def is_bags(dataset_or_shape) -> bool:
  shape = getattr(dataset_or_shape, "image_shape", dataset_or_shape)
  return len(tuple(shape)) == 4


def make_bags(dataset: Dataset, *, num_train: int = 100, num_test: int = 1000,
              mean: float = 10.0, std: float = 2.0, target: int = 9, max_size: int = 0,
              seed: int = 0) -> Dataset:
  """A bag dataset from an image dataset: training bags from its train split,
  test bags from its test split, all drawn from `seed`. A bag's label is 1
  when it holds at least one `target` instance."""
  if num_train < 2 or num_test < 1 or std < 0 or mean < 1:
    raise ConfigError(f"data.bags: needs num_train >= 2, num_test >= 1, mean >= 1 and "
                      f"std >= 0, got num_train={num_train}, num_test={num_test}, "
                      f"mean={mean}, std={std}")
  if not 0 <= target < dataset.num_classes:
    raise ConfigError(f"data.bags.target={target} is not a class of {dataset.name!r} "
                      f"(0..{dataset.num_classes - 1})")
  rng = np.random.default_rng(seed)
  draw = dict(mean=mean, std=std, target=target, rng=rng, max_size=max_size)
  train_index, train_labels = draw_bags(dataset.train_labels, num_train, **draw)
  test_index, test_labels = draw_bags(dataset.test_labels, num_test, **draw)
  instance_labels = np.where(test_index >= 0,
                             dataset.test_labels[np.maximum(test_index, 0)] == target, -1)
  return Dataset(f"{dataset.name}_bags", pack_bags(dataset.train_images, train_index),
                 train_labels, pack_bags(dataset.test_images, test_index), test_labels,
                 num_classes=2, test_instance_labels=instance_labels.astype(np.int32))


def load(data_config) -> Dataset:
  """Loads `data_config.name`: a synthetic dataset by name, else the IDX dir
  if given, else the array cache, else TFDS; made into bags when
  `data_config.bags` is set (a fresh draw per `label_seed`)."""
  dataset = _load_instances(data_config)
  if data_config.get("bags"):
    try:
      return make_bags(dataset, **{"seed": data_config.label_seed, **dict(data_config.bags)})
    except TypeError as e:
      raise ConfigError(f"data.bags: {e}") from None
  return dataset


def _load_instances(data_config) -> Dataset:
  if data_config.name == "folder":
    from mnist_ten import folders  # pylint: disable=g-import-not-at-top
    return folders.load(data_config)
  if data_config.name in SYNTHETIC:
    try:
      return SYNTHETIC.get(data_config.name)(**dict(data_config.get("synthetic", {})))
    except TypeError as e:
      raise ConfigError(f"data.synthetic for {data_config.name!r}: {e}") from None
  if data_config.idx_dir:
    return load_idx_dir(data_config.idx_dir, data_config.name)
  cache_dir = data_config.cache_dir or default_cache_dir()
  dataset = load_cache(cache_dir, data_config.name)
  if dataset is None:
    dataset = load_tfds(data_config.name, data_config.data_dir or None,
                        data_config.download, cache_dir)
    save_cache(dataset, cache_dir)
  return dataset


def hflip_allowed(data_config) -> bool:
  """Whether horizontal flips keep this dataset's labels ('auto' knows a few)."""
  choice = str(data_config.hflip).lower()
  if choice == "auto":
    return HFLIP_ALLOWED.get(data_config.name, False)
  if choice in ("true", "false"):
    return choice == "true"
  raise ConfigError(f"data.hflip must be 'auto', 'true' or 'false', got {data_config.hflip!r}")
