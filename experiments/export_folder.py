"""Writes a dataset the codebase can load (a TFDS name, or any data.name) as
an image folder of PNGs with labels.csv and test.csv, the format of
`data.name=folder` (docs/data.md): to try the folder path on real data, and
to check it end to end against the same images read from TFDS.

    python experiments/export_folder.py --name=mnist --out=/tmp/mnist_folder
    python launch.py --config=configs/supervised.py --config.data.name=folder \
        --config.data.dir=/tmp/mnist_folder

Rows keep the dataset's order and the class names are the label numbers
(sorted as text they keep their order while there are at most 10 classes),
so a few-label draw from the folder picks the same images as the same seed
on the TFDS dataset. --unlabeled_share leaves that share of the train rows'
labels empty (the seed project's CSVs, most images unlabeled).
"""
import pathlib
import sys

from absl import app
from absl import flags
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from mnist_ten import config as config_lib  # pylint: disable=g-import-not-at-top
from mnist_ten import datasets  # pylint: disable=g-import-not-at-top
from mnist_ten import errors  # pylint: disable=g-import-not-at-top
from mnist_ten import folders  # pylint: disable=g-import-not-at-top



def export(data, out: pathlib.Path, unlabeled_share: float = 0.0) -> dict:
  """Writes the dataset of the data config `data` to `out`; returns the counts."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if out.exists() and any(out.iterdir()):
    raise errors.ConfigError(f"--out {out} is not empty: give a new folder")
  if not 0.0 <= unlabeled_share < 1.0:
    raise errors.ConfigError(f"--unlabeled_share must be in [0, 1), got {unlabeled_share}")
  ds = datasets.load(data)
  if ds.num_classes > 10:
    raise errors.ConfigError(f"{data.name} has {ds.num_classes} classes: number names would sort "
                             "out of order; this exporter writes at most 10")
  out.mkdir(parents=True, exist_ok=True)
  hidden = np.zeros(ds.train_labels.shape[0], bool)
  if unlabeled_share:
    rng = np.random.default_rng(0)
    hidden[rng.permutation(hidden.size)[:int(round(unlabeled_share * hidden.size))]] = True

  def write(prefix, images, labels, hide):
    files = []
    for i, image in enumerate(images):
      files.append(f"{prefix}_{i:05d}.png")
      Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(out / files[-1])
    return files, ["" if h else str(int(y)) for y, h in zip(labels, hide)]
  folders.write_labels_csv(out / "labels.csv",
                           *write("train", ds.train_images, ds.train_labels, hidden))
  folders.write_labels_csv(out / "test.csv", *write(
      "test", ds.test_images, ds.test_labels, np.zeros(ds.test_labels.shape[0], bool)))
  return {"train": int(ds.train_labels.shape[0]), "unlabeled": int(hidden.sum()),
          "test": int(ds.test_labels.shape[0])}


@errors.guard
def main(argv):
  del argv
  name, out = flags.FLAGS.name, flags.FLAGS.out
  if not out:
    raise errors.ConfigError("give --out=FOLDER")
  data = config_lib.base().data
  data.name = name
  counts = export(data, pathlib.Path(out), flags.FLAGS.unlabeled_share)
  print(f"wrote {counts['train']} train images ({counts['unlabeled']} unlabeled) and "
        f"{counts['test']} test images of {name} to {out}")


if __name__ == "__main__":
  # Defined here, not at import: the tests import export(), and other
  # experiment modules define --out too.
  flags.DEFINE_string("name", "mnist", "The dataset to export (data.name).")
  flags.DEFINE_string("out", None, "The folder to write (must be empty or absent).")
  flags.DEFINE_float("unlabeled_share", 0.0,
                     "Share of train rows written without a label (drawn by seed 0).")
  app.run(main)
