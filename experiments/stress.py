"""Labeled sets a person might pick, instead of a random draw: per class, the
train image at quantile q of the distance to its class's typical look, in
one of two feature spaces; then one config over those sets.

    python experiments/stress.py --config=configs/default.py \
        --sets=pixels:0.5,pixels:0.9,pixels:0.99,hog:0.5,hog:0.9,hog:0.99 \
        --out=experiments/results/stress_default

The builder reads the train labels: it plays the person who labels. The
run receives only the ten indices it chose (data.labeled_indices); the
unlabeled images' labels stay hidden from training as ever. Spaces:
  pixels  the raw pixels, the class's typical look its mean image
  hog     the graph's own features (histograms of oriented gradients of the
          deskewed digit, 4-pixel cells, as configs/default.py), the typical
          look the mean feature vector
Each set runs in OUT/set_SPACE_qQ (resumable); OUT/table.md and table.csv give
each set's indices, accuracy and time.

With --graph_only nothing trains: each set gets the first propagation of
the config's first stage (features, graph, Poisson learning, refinement),
scored against the unlabeled images' true labels (read here only to report,
as experiments/pseudo_labels.py does), in OUT/graph_table.md. Seconds a set
instead of minutes: the way to compare propagation settings on many sets.
"""
import json
import pathlib
import sys
from typing import Dict, List, Tuple

from absl import app
from absl import flags
from absl import logging
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from experiments import pseudo_labels  # pylint: disable=g-import-not-at-top
from experiments import report  # pylint: disable=g-import-not-at-top
from experiments import run_seeds  # pylint: disable=g-import-not-at-top,unused-import  (--config, --out)
from mnist_ten import datasets  # pylint: disable=g-import-not-at-top
from mnist_ten import errors  # pylint: disable=g-import-not-at-top
from mnist_ten import graph  # pylint: disable=g-import-not-at-top
from mnist_ten import train  # pylint: disable=g-import-not-at-top

_SETS = flags.DEFINE_string("sets", "pixels:0.5,pixels:0.9,pixels:0.99,hog:0.5,hog:0.9,hog:0.99",
                            "SPACE:QUANTILE, comma-separated.")

SPACES = {
    "pixels": lambda images: images.reshape(images.shape[0], -1).astype(np.float32) / 255.0,
    "hog": lambda images: graph.embed(images, "hog(cell=4, dim=64)"),
}


def parse_sets(text: str) -> List[Tuple[str, float]]:
  sets = []
  for part in filter(None, (p.strip() for p in text.split(","))):
    space, _, q = part.partition(":")
    try:
      q = float(q)
    except ValueError:
      q = -1.0
    if space not in SPACES or not 0.0 <= q <= 1.0:
      raise errors.ConfigError(f"--sets: {part!r} must be SPACE:QUANTILE with SPACE one of "
                               f"{', '.join(SPACES)} and QUANTILE in [0, 1], e.g. pixels:0.9")
    sets.append((space, q))
  return sets


def build_set(images: np.ndarray, labels: np.ndarray, num_classes: int, space: str,
              q: float) -> np.ndarray:
  """Per class c (in order), the index of the train image at quantile `q` of
  the distance to the mean of class c's images in `space` (q=0: the most
  typical, q=1: the most atypical)."""
  return _pick(SPACES[space](images), labels, num_classes, q)


def set_dir(out: pathlib.Path, space: str, q: float) -> pathlib.Path:
  return out / f"set_{space}_q{q:.2f}" if round(q, 2) == q else out / f"set_{space}_q{q:g}"


def run(config, sets, out) -> List[Dict]:
  """Trains (or resumes, or skips) `config` on each labeled set."""
  out = pathlib.Path(out)
  dataset = datasets.load(config.data)
  features_cache = {}
  rows = []
  for space, q in sets:
    workdir = set_dir(out, space, q)
    done = report.load_results(workdir)
    if done is None:
      indices, config_s = _set_config(config, dataset, features_cache, space, q)
      config_s.name = f"{config.name or 'config'} on {space} q={q:g}"
      logging.info("labeled set %s q=%g: %s -> %s", space, q, indices.tolist(), workdir)
      train.train_and_evaluate(config_s, workdir)
      done = report.load_results(workdir)
    rows.append(dict(done, space=space, quantile=q))
  _table(out, rows)
  return rows


def graph_only(config, sets, out) -> List[Dict]:
  """The first stage's propagation on each set, scored on the unlabeled
  images (no training); OUT/graph_table.md and graph_table.json."""
  out = pathlib.Path(out)
  dataset = datasets.load(config.data)
  features_cache, rows = {}, []
  for space, q in sets:
    _, config_s = _set_config(config, dataset, features_cache, space, q)
    row = dict(pseudo_labels.score_propagation(config_s), space=space, quantile=q)
    per_class = row["per_class_accuracy"]
    logging.info("graph only %s q=%g: %.2f%% (lowest class %d: %.1f%%), %d warnings",
                 space, q, 100 * row["pseudo_label_accuracy"], int(np.argmin(per_class)),
                 100 * min(per_class), len(row["warnings"]))
    rows.append(row)
  md = ["| space | q | labeled indices | pseudo-label acc. (%) | lowest class (%) | "
        "share warnings |", "|---|---|---|---|---|---|"]
  for r in rows:
    worst = int(np.argmin(r["per_class_accuracy"]))
    md.append(f"| {r['space']} | {r['quantile']:g} | {r['labeled_indices']} | "
              f"{100 * r['pseudo_label_accuracy']:.2f} | "
              f"{worst}: {100 * r['per_class_accuracy'][worst]:.1f} | {len(r['warnings'])} |")
  out.mkdir(parents=True, exist_ok=True)
  (out / "graph_table.md").write_text("\n".join(md) + "\n")
  (out / "graph_table.json").write_text(json.dumps(rows, indent=2))
  return rows


def _set_config(config, dataset, features_cache, space: str, q: float):
  """The set's indices and a copy of `config` that trains on them alone;
  `features_cache` holds each space's features (one pass over the train
  images per space)."""
  if space not in features_cache:
    features_cache[space] = SPACES[space](dataset.train_images)
  indices = _pick(features_cache[space], dataset.train_labels, dataset.num_classes, q)
  config_s = config.copy_and_resolve_references()
  config_s.data.labeled_indices = tuple(int(i) for i in indices)
  return indices, config_s


def _pick(features, labels, num_classes, q):
  chosen = []
  for c in range(num_classes):
    members = np.flatnonzero(labels == c)
    distance = np.linalg.norm(features[members] - features[members].mean(0), axis=1)
    order = members[np.argsort(distance, kind="stable")]
    chosen.append(int(order[int(round(q * (order.size - 1)))]))
  return np.array(chosen)


def _table(out: pathlib.Path, rows: List[Dict]):
  md = ["| space | q | labeled indices | test acc. EMA (%) | lowest class (%) | "
        "share warnings | train min |", "|---|---|---|---|---|---|---|"]
  csv = ["space,quantile,labeled_indices,test_accuracy_ema,min_class_accuracy,warnings,"
         "train_seconds"]
  for r in sorted(rows, key=lambda r: (r["space"], r["quantile"])):
    per_class = r.get("test_per_class_accuracy_ema") or [float("nan")]
    worst = int(np.argmin(per_class))
    warnings = len(r.get("class_share_warnings", []))
    md.append(f"| {r['space']} | {r['quantile']:g} | {r['labeled_indices']} | "
              f"{100 * r['test_accuracy_ema']:.2f} | {worst}: {100 * per_class[worst]:.1f} | "
              f"{warnings} | {r['train_seconds_all_stages'] / 60:.1f} |")
    csv.append(f"{r['space']},{r['quantile']},{' '.join(map(str, r['labeled_indices']))},"
               f"{r['test_accuracy_ema']},{per_class[worst]},{warnings},"
               f"{r['train_seconds_all_stages']:.1f}")
  out.mkdir(parents=True, exist_ok=True)
  (out / "table.md").write_text("\n".join(md) + "\n")
  (out / "table.csv").write_text("\n".join(csv) + "\n")


if "graph_only" not in flags.FLAGS:  # stress.py and proposer.py both define it; one process may import both
  flags.DEFINE_bool("graph_only", False, "Score the first propagation; train nothing.")


def main(argv):
  del argv
  logging.get_absl_handler().addFilter(train.OwnLogs())
  out = pathlib.Path(flags.FLAGS.out)
  if flags.FLAGS.graph_only:
    graph_only(flags.FLAGS.config, parse_sets(_SETS.value), out)
    print((out / "graph_table.md").read_text())
    return
  run(flags.FLAGS.config, parse_sets(_SETS.value), out)
  print((out / "table.md").read_text())


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "out"])
  app.run(errors.guard(main))
