"""Proposes which train images a person should label, reading no label:

    python -m mnist_ten.propose --config=configs/default.py --num=20 --out=proposal/

The images are clustered in the graph's features (the first round's
`propagate.features` of the config; k-means with `num` clusters, scikit-learn),
each cluster's medoid (the member nearest its centre) is proposed, and the
proposals are ordered by greedy coverage (facility location: each next one
adds the most to the summed similarity of every image to its nearest
proposal), so that labeling the first ones covers the most. Writes
OUT/proposal.json ({"labeled_indices": [...] in that order}), OUT/labels.csv
(index, label: the label column to fill in) and OUT/contact_sheet.png.
Training takes the proposal with --config.data.labeled_file=OUT/proposal.json
(the first --config.data.labeled_count=N of them; the TFDS dataset's own
label of each image is used); needs the `[plots]` extra.
"""
import json
import pathlib
import sys
from typing import Dict

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags
import numpy as np

from mnist_ten import datasets
from mnist_ten import errors
from mnist_ten import graph
from mnist_ten import neighbors
from mnist_ten import plots
from mnist_ten.errors import ConfigError

COVERAGE_SAMPLE = 10_000  # images the coverage is measured on (a seeded subset)


def graph_features_spec(config) -> str:
  """The features of the config's first propagation round."""
  spec, stage = "", config
  while stage is not None:
    if stage.get("method") == "propagate":
      spec = stage.propagate.features
    stage = stage.pretrain if stage.get("pretrain") and stage.pretrain.get("method") else None
  if not spec:
    raise ConfigError(f"propose: config {config.name!r} has no propagation round whose graph "
                      "features to cluster; use configs/default.py or set "
                      "--features=hog(cell=4, dim=64)")
  if "encoder" in spec:  # a later round's: the network is not trained yet
    spec = "|".join(b for b in spec.split("|") if not b.strip().startswith("encoder"))
  return spec


def propose(features: np.ndarray, num: int, seed: int = 0) -> Dict:
  """`num` representative rows of unit-length `features`, ordered by greedy
  coverage; also each one's cluster size and the coverage after each."""
  from sklearn.cluster import KMeans  # pylint: disable=g-import-not-at-top
  n = features.shape[0]
  if not 1 <= num <= n:
    raise ConfigError(f"propose: --num={num} must be in [1, {n}]")
  kmeans = KMeans(n_clusters=num, n_init=1, random_state=seed).fit(features)
  medoids, sizes = [], []
  for c in range(num):
    members = np.flatnonzero(kmeans.labels_ == c)
    centre = neighbors.unit(kmeans.cluster_centers_[c][None])[0]
    medoids.append(int(members[np.argmax(features[members] @ centre)]))
    sizes.append(int(members.size))
  sample = np.random.default_rng(seed).choice(n, min(n, COVERAGE_SAMPLE), replace=False)
  sims = features[sample] @ features[medoids].T  # [S, num]
  order, best, coverage = [], np.full(len(sample), -1.0), []
  for _ in range(num):
    gain = np.maximum(sims, best[:, None]).sum(0)
    gain[order] = -np.inf
    j = int(np.argmax(gain))
    order.append(j)
    best = np.maximum(best, sims[:, j])
    coverage.append(float(best.mean()))
  return {"labeled_indices": [medoids[j] for j in order],
          "cluster_sizes": [sizes[j] for j in order], "coverage": coverage}


def contact_sheet(images: np.ndarray, indices, path: pathlib.Path):
  cols = 10
  rows = -(-len(indices) // cols)
  fig = plots.figure(cols * 1.1, rows * 1.3 + 0.4)
  fig.suptitle("images to label, most covering first: order. train index", fontsize=8)
  for k, i in enumerate(indices):
    plots.show(fig.add_subplot(rows, cols, k + 1), images[i], f"{k + 1}. {i}")
  fig.savefig(path, bbox_inches="tight")


def write(out: pathlib.Path, proposal: Dict, images: np.ndarray, meta: Dict):
  out.mkdir(parents=True, exist_ok=True)
  (out / "proposal.json").write_text(json.dumps({**meta, **proposal}, indent=2))
  (out / "labels.csv").write_text(
      "index,label\n" + "".join(f"{i},\n" for i in proposal["labeled_indices"]))
  contact_sheet(images, proposal["labeled_indices"], out / "contact_sheet.png")


def _define_flags():
  # Here, not at import: the module is also imported (tests, notebooks)
  # beside other commands that define --config.
  config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
  flags.DEFINE_integer("num", 20, "Images to propose.")
  flags.DEFINE_integer("seed", 0, "The clustering's seed.")
  flags.DEFINE_string("out", "proposal", "Folder for the proposal.")
  flags.DEFINE_string("features", "", "Graph features; default: the config's.")
  flags.mark_flags_as_required(["config"])


def main(argv):
  del argv
  logging.set_verbosity(logging.INFO)
  f = flags.FLAGS
  config = f.config
  dataset = datasets.load(config.data)
  spec = f.features or graph_features_spec(config)
  logging.info("propose: %d train images, features %s", dataset.train_images.shape[0], spec)
  features = graph.embed(dataset.train_images, spec)
  proposal = propose(neighbors.unit(features), f.num, f.seed)
  out = pathlib.Path(f.out)
  write(out, proposal, dataset.train_images,
        {"dataset": dataset.name, "features": spec, "seed": f.seed})
  print(f"{out / 'proposal.json'}: {len(proposal['labeled_indices'])} images; train with "
        f"--config.data.labeled_file={out / 'proposal.json'}")
  return 0


if __name__ == "__main__":
  _define_flags()
  app.run(errors.guard(main))
