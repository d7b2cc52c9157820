"""Image-folder datasets: `data.name="folder"`, `data.dir=PATH`.

The folder holds image files (PNG, JPEG, anything Pillow decodes) and
  labels.csv   `file,label` rows (a header line `file,label` first); an empty
               label marks an unlabeled image. These are the train images.
  test.csv     optional, the same format, every row labeled. Without it,
               `data.test_fraction` of the labeled rows are held out as the
               test set, drawn by `data.test_seed`.
Class names are the labels as written, sorted; a run keeps them in
split.json, and logs, plots and `load_classifier` use them. Images are
converted to `data.color` (grayscale, rgb, or auto: rgb when any image has
colour) and resized to `data.image_size` (or must share one size), then
cached as arrays keyed by the file list, sizes and modification times: a
changed folder is read again, an unchanged one is not.
"""
import csv
import dataclasses
import hashlib
import pathlib
from typing import List, Optional, Tuple

import numpy as np

from mnist_ten import datasets
from mnist_ten.errors import ConfigError, DataError

UNLABELED = -1  # train_labels of an unlabeled row: never drawn, never trained on


@dataclasses.dataclass(frozen=True)
class Row:
  line: int  # 1-based line of the CSV, for messages
  file: str
  label: str  # "" when unlabeled


def read_csv(path: pathlib.Path, *, all_labeled: bool) -> List[Row]:
  try:
    text = path.read_text(encoding="utf-8-sig")
  except OSError as e:
    raise DataError(f"cannot read {path}: {e.strerror or e}") from None
  rows = []
  for line, fields in enumerate(csv.reader(text.splitlines()), start=1):
    if not fields or all(not f.strip() for f in fields):
      continue
    if line == 1 and [f.strip().lower() for f in fields[:2]] == ["file", "label"]:
      continue  # the header
    if len(fields) > 2:
      raise DataError(f"{path}, line {line}: expected 'file,label', got {len(fields)} fields")
    file, label = fields[0].strip(), (fields[1].strip() if len(fields) > 1 else "")
    if not file:
      raise DataError(f"{path}, line {line}: no file name")
    if all_labeled and not label:
      raise DataError(f"{path}, line {line}: {file!r} has no label; every test image needs one")
    rows.append(Row(line, file, label))
  return rows


def _fingerprint(folder: pathlib.Path, rows: List[Row], options) -> str:
  h = hashlib.sha256(repr(options).encode())
  for row in rows:
    try:
      st = (folder / row.file).stat()
    except OSError:
      st = None
    h.update(f"{row.file}\0{row.label}\0{st and st.st_size}\0{st and st.st_mtime_ns}\n".encode())
  return h.hexdigest()[:16]


def _decode(path: pathlib.Path, csv_path: pathlib.Path, row: Row):
  from PIL import Image, UnidentifiedImageError  # pylint: disable=g-import-not-at-top
  if not path.is_file():
    raise DataError(f"{csv_path}, line {row.line}: {row.file!r} does not exist in {path.parent}")
  try:
    with Image.open(path) as image:
      image.load()
      return image.copy()
  except (UnidentifiedImageError, OSError, ValueError) as e:
    raise DataError(f"{csv_path}, line {row.line}: {row.file!r} cannot be decoded as an image "
                    f"({type(e).__name__}: {e})") from None


def _to_array(image, color: str, size: Optional[Tuple[int, int]]) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  image = image.convert("L" if color == "grayscale" else "RGB")
  if size is not None and image.size != (size[1], size[0]):
    image = image.resize((size[1], size[0]), Image.BILINEAR)
  array = np.asarray(image, np.uint8)
  return array[..., None] if array.ndim == 2 else array


def _has_colour(image) -> bool:
  if image.mode in ("L", "1", "I", "F", "LA", "I;16"):
    return False
  rgb = np.asarray(image.convert("RGB"), np.int16)
  return bool(np.abs(rgb - rgb.mean(-1, keepdims=True)).max() > 2)


def load(data_config, cache_dir=None) -> datasets.Dataset:
  folder = pathlib.Path(data_config.get("dir", "") or "")
  if not str(data_config.get("dir", "")):
    raise ConfigError("data.name='folder' needs data.dir: the folder with the images and "
                      "labels.csv")
  if not folder.is_dir():
    raise DataError(f"data.dir={str(folder)!r} is not a folder")
  labels_csv = folder / "labels.csv"
  if not labels_csv.exists():
    raise DataError(f"{folder} has no labels.csv: it must list the train images as "
                    "'file,label' rows (an empty label: unlabeled)")
  train_rows = read_csv(labels_csv, all_labeled=False)
  if not train_rows:
    raise DataError(f"{labels_csv} lists no image: the folder dataset is empty")
  test_csv = folder / "test.csv"
  test_rows = read_csv(test_csv, all_labeled=True) if test_csv.exists() else None
  names = sorted({r.label for r in train_rows if r.label})
  if not names:
    raise DataError(f"{labels_csv}: no row has a label; label at least one image per class")
  if test_rows is not None:
    unknown = sorted({r.label for r in test_rows} - set(names))
    if unknown:
      first = next(r for r in test_rows if r.label in unknown)
      raise DataError(f"{test_csv}, line {first.line}: class {first.label!r} has no labeled "
                      f"image in labels.csv (its classes: {', '.join(names)})")
  color = str(data_config.get("color", "auto"))
  if color not in ("auto", "grayscale", "rgb"):
    raise ConfigError(f"data.color must be auto, grayscale or rgb, got {color!r}")
  size = tuple(data_config.get("image_size", ()) or ())
  if size and (len(size) != 2 or min(size) < 1):
    raise ConfigError(f"data.image_size must be (height, width), got {size!r}")
  options = (color, size, data_config.get("test_fraction", 0.2),
             data_config.get("test_seed", 0), test_rows is not None)
  key = _fingerprint(folder, train_rows + (test_rows or []), options)
  name = f"folder_{folder.resolve().name}_{key}"
  cached = datasets.load_cache(cache_dir or data_config.get("cache_dir") or
                               datasets.default_cache_dir(), name)
  if cached is not None:
    return dataclasses.replace(cached, name=f"folder:{folder.name}", class_names=tuple(names))
  dataset = _read(folder, labels_csv, train_rows, test_csv, test_rows, names, color, size,
                  float(data_config.get("test_fraction", 0.2)),
                  int(data_config.get("test_seed", 0)))
  datasets.save_cache(dataclasses.replace(dataset, name=name),
                      cache_dir or data_config.get("cache_dir") or datasets.default_cache_dir())
  return dataset


def _read(folder, labels_csv, train_rows, test_csv, test_rows, names, color, size,
          test_fraction, test_seed) -> datasets.Dataset:
  index = {n: i for i, n in enumerate(names)}
  decoded = [(_decode(folder / r.file, labels_csv, r), r) for r in train_rows]
  test_decoded = [(_decode(folder / r.file, test_csv, r), r) for r in test_rows or []]
  if color == "auto":
    color = "rgb" if any(_has_colour(im) for im, _ in decoded + test_decoded) else "grayscale"
  if not size:
    sizes = {im.size for im, _ in decoded + test_decoded}
    if len(sizes) > 1:
      raise DataError(f"the images of {folder} have {len(sizes)} sizes (e.g. "
                      f"{sorted(sizes)[:3]}, width x height): set data.image_size=(H, W) "
                      "to resize them")
    w, h = sizes.pop()
    size = (h, w)
  images = np.stack([_to_array(im, color, size) for im, _ in decoded])
  labels = np.array([index[r.label] if r.label else UNLABELED for _, r in decoded], np.int32)
  if test_rows is not None:
    test_images = np.stack([_to_array(im, color, size) for im, _ in test_decoded])
    test_labels = np.array([index[r.label] for _, r in test_decoded], np.int32)
  else:
    labeled = np.flatnonzero(labels >= 0)
    if not 0.0 < test_fraction < 1.0:
      raise ConfigError(f"{folder} has no test.csv: data.test_fraction={test_fraction} must be "
                        "in (0, 1), the share of its labeled images held out as the test set")
    held = np.sort(np.random.default_rng(test_seed).choice(
        labeled, max(1, int(round(test_fraction * labeled.size))), replace=False))
    test_images, test_labels = images[held], labels[held]
    keep = np.setdiff1d(np.arange(len(labels)), held)
    images, labels = images[keep], labels[keep]
  missing = [names[c] for c in range(len(names)) if not (labels == c).any()]
  if missing:
    raise DataError(f"class(es) {', '.join(map(repr, missing))} of {labels_csv} have no labeled "
                    "train image left (all went to the test set): label more, or lower "
                    "data.test_fraction")
  return datasets.Dataset(f"folder:{folder.name}", images, labels, test_images, test_labels,
                          num_classes=len(names), class_names=tuple(names))


def write_labels_csv(path, files, labels=None):
  """labels.csv with `file,label` rows (empty labels: to fill in)."""
  labels = labels if labels is not None else [""] * len(files)
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(["file", "label"])
    writer.writerows(zip(files, labels))

