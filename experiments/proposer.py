"""The proposer measured, with the true labels playing the person: for each
proposer seed, `python -m mnist_ten.propose`'s ordering of --num images, then
a config trained on the first N of them for each N in --counts.

    python experiments/proposer.py --config=configs/default.py --seeds=0-4 \
        --counts=10,20,30 --out=experiments/results/proposer_default

Each (seed, N) runs in OUT/seed_S/n_N (resumable). OUT/table.md gives, per
seed, how many proposals it took until every class had one (read from the
train labels after the proposal: the person labeling), and each run's
accuracy; the summary puts the mean over seeds beside random one-per-class
draws (experiments/results/default_fast_graph).

With --graph_only nothing trains: each (seed, N) gets the config's first
propagation, scored on the unlabeled images (experiments/pseudo_labels.py),
in OUT/graph_table.md: the cheap first look before the training runs.
"""
import json
import pathlib
import sys

from absl import app
from absl import flags
from absl import logging
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from experiments import pseudo_labels  # pylint: disable=g-import-not-at-top
from experiments import report  # pylint: disable=g-import-not-at-top
from experiments import run_seeds  # pylint: disable=g-import-not-at-top  (--config, --seeds, --out)
from mnist_ten import datasets  # pylint: disable=g-import-not-at-top
from mnist_ten import errors  # pylint: disable=g-import-not-at-top
from mnist_ten import graph  # pylint: disable=g-import-not-at-top
from mnist_ten import neighbors  # pylint: disable=g-import-not-at-top
from mnist_ten import propose  # pylint: disable=g-import-not-at-top
from mnist_ten import train  # pylint: disable=g-import-not-at-top

_COUNTS = flags.DEFINE_string("counts", "10,20,30", "How many proposals are labeled.")


def until_every_class(labels_in_order, num_classes: int) -> int:
  """How many of the proposals, in order, until every class has one (0: never)."""
  seen = set()
  for k, label in enumerate(labels_in_order):
    seen.add(int(label))
    if len(seen) == num_classes:
      return k + 1
  return 0


def proposals(config, seeds, num: int, out: pathlib.Path, dataset):
  """(seed, path of proposal.json, its indices in order) for each seed, each
  proposed once (OUT/seed_S) and reused after."""
  features, found = None, []
  for seed in seeds:
    seed_dir = out / f"seed_{seed}"
    path = seed_dir / "proposal.json"
    if not path.exists():
      if features is None:
        features = neighbors.unit(graph.embed(dataset.train_images,
                                              propose.graph_features_spec(config)))
      propose.write(seed_dir, propose.propose(features, num, seed),
                    dataset.train_images, {"dataset": dataset.name, "seed": seed})
    found.append((seed, path, json.loads(path.read_text())["labeled_indices"]))
  return found


def _labeled_config(config, path, n, seed):
  config_n = config.copy_and_resolve_references()
  config_n.data.labeled_file, config_n.data.labeled_count = str(path), n
  config_n.seed = seed
  return config_n


def graph_only(config, seeds, counts, out: pathlib.Path):
  """The first propagation for each (seed, N), scored; OUT/graph_table.md."""
  dataset = datasets.load(config.data)
  rows = []
  for seed, path, order in proposals(config, seeds, max(counts), out, dataset):
    needed = until_every_class(dataset.train_labels[order], dataset.num_classes)
    for n in counts:
      score = pseudo_labels.score_propagation(_labeled_config(config, path, n, seed))
      rows.append({"seed": seed, "n": n, "every_class_after": needed,
                   "classes": len(set(dataset.train_labels[order[:n]].tolist())),
                   "accuracy": score["pseudo_label_accuracy"],
                   "lowest_class": float(min(score["per_class_accuracy"])),
                   "warnings": len(score["warnings"])})
      logging.info("proposer seed %d, %d labels: graph %.2f%%", seed, n, 100 * rows[-1]["accuracy"])
  _table(out, rows, counts, "graph_table.md", "pseudo-label acc. (%)")
  return rows


def run(config, seeds, counts, out: pathlib.Path):
  dataset = datasets.load(config.data)
  rows = []
  for seed, path, order in proposals(config, seeds, max(counts), out, dataset):
    seed_dir = out / f"seed_{seed}"
    needed = until_every_class(dataset.train_labels[order], dataset.num_classes)
    for n in counts:
      workdir = seed_dir / f"n_{n}"
      done = report.load_results(workdir)
      if done is None:
        config_n = _labeled_config(config, path, n, seed)
        logging.info("proposer seed %d, first %d proposals -> %s", seed, n, workdir)
        train.train_and_evaluate(config_n, workdir)
        done = report.load_results(workdir)
      rows.append({"seed": seed, "n": n, "every_class_after": needed,
                   "classes": len(set(dataset.train_labels[order[:n]].tolist())),
                   "accuracy": done["test_accuracy_ema"],
                   "train_seconds": done["train_seconds_all_stages"]})
  _table(out, rows, counts)
  return rows


def _table(out, rows, counts, name="table.md", what="test acc. EMA (%)"):
  last = "train min" if name == "table.md" else "share warnings"
  md = [f"| proposer seed | every class after | labels | classes labeled | {what} | {last} |",
        "|---|---|---|---|---|---|"]
  for r in rows:
    tail = f"{r['train_seconds'] / 60:.1f}" if "train_seconds" in r else str(r["warnings"])
    md.append(f"| {r['seed']} | {r['every_class_after'] or 'never'} | {r['n']} | "
              f"{r['classes']} | {100 * r['accuracy']:.2f} | {tail} |")
  md.append("")
  for n in counts:
    acc = 100 * np.array([r["accuracy"] for r in rows if r["n"] == n])
    if acc.size:
      std = acc.std(ddof=1) if acc.size > 1 else 0.0
      md.append(f"- {n} proposed labels: **{acc.mean():.2f} ± {std:.2f}%** (min {acc.min():.2f}, "
                f"max {acc.max():.2f}) over {acc.size} proposer seeds")
  out.mkdir(parents=True, exist_ok=True)
  (out / name).write_text("\n".join(md) + "\n")


if "graph_only" not in flags.FLAGS:  # stress.py and proposer.py both define it; one process may import both
  flags.DEFINE_bool("graph_only", False, "Score the first propagation; train nothing.")


def main(argv):
  del argv
  logging.get_absl_handler().addFilter(train.OwnLogs())
  try:
    counts = sorted({int(c) for c in _COUNTS.value.split(",") if c.strip()})
  except ValueError:
    raise errors.ConfigError(f"--counts={_COUNTS.value!r}: give numbers, e.g. 10,20,30") from None
  out = pathlib.Path(flags.FLAGS.out)
  seeds = run_seeds.parse_seeds(flags.FLAGS.seeds)
  if flags.FLAGS.graph_only:
    graph_only(flags.FLAGS.config, seeds, counts, out)
    print((out / "graph_table.md").read_text())
    return
  run(flags.FLAGS.config, seeds, counts, out)
  print((out / "table.md").read_text())


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "out"])
  app.run(errors.guard(main))
