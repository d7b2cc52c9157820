"""Diagnostic: how good are a run's guesses about the unlabeled images?

    python experiments/pseudo_labels.py RUN_WORKDIR [--threshold=0.95] [--layers]

This is the only place where the labels of the unlabeled train images are
read; nothing here feeds back into training. It reports, for the run's own
split (its config and split.json):
  - for `propagate` runs: the accuracy of the graph pseudo-labels the method
    prepared, overall and on the weighted (kept) ones;
  - for every trained run: the final (EMA) network's accuracy on the unlabeled
    train images, and the accuracy and coverage of its predictions with
    confidence >= threshold (FixMatch's pseudo-labels).
  - with --layers: how well each layer of the run's encoder would serve as
    graph features (`layer_graphs`): the purity of each image's 10 nearest
    neighbours, the accuracy of the nearest labeled example, and of Poisson
    learning's pseudo-labels over the graph, beside raw pixels as reference.
    This tells whether a pretrained encoder (pretext, SimCLR) holds
    neighbourhoods that the labels can spread over.
Prints JSON and writes it to RUN_WORKDIR/pseudo_labels.json.

`score_propagation` serves the graph-only modes of experiments/stress.py and
experiments/proposer.py: a config's first propagation on its own split,
scored without training.
"""
import json
import pathlib
import sys

from absl import app
from absl import flags
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from mnist_ten import config as config_lib  # pylint: disable=g-import-not-at-top
from mnist_ten import errors  # pylint: disable=g-import-not-at-top
from mnist_ten import graph  # pylint: disable=g-import-not-at-top
from mnist_ten import inference  # pylint: disable=g-import-not-at-top
from mnist_ten import train  # pylint: disable=g-import-not-at-top
from mnist_ten.inference import load_classifier  # pylint: disable=g-import-not-at-top



def diagnose(workdir: pathlib.Path, threshold: float) -> dict:
  if not (workdir / "config.json").is_file():
    raise errors.WorkdirError(f"{str(workdir)!r} holds no run (no config.json)")
  config = config_lib.from_saved(json.loads((workdir / "config.json").read_text()))
  setup = train.Setup(config)
  split, dataset = setup.split, setup.dataset
  truth = dataset.train_labels[split.unlabeled]
  out = {"workdir": str(workdir), "method": config.method,
         "num_unlabeled": int(split.unlabeled.size)}
  if config.method == "propagate":
    data = inference.prepare_method(setup.parts)
    pseudo = np.asarray(data.pseudo_labels)
    kept = np.asarray(data.pseudo_weights) > 0
    out["graph_pseudo_label_accuracy"] = float((pseudo == truth).mean())
    out["graph_kept_fraction"] = float(kept.mean())
    out["graph_kept_accuracy"] = float((pseudo[kept] == truth[kept]).mean())
  if setup.method.trains:
    # The network alone: a graph's vote (propagate.vote) would hand these
    # training images their own pseudo-labels back.
    predicted, probs = load_classifier(workdir, vote=False)(
        dataset.train_images[split.unlabeled])
    confident = probs.max(-1) >= threshold
    out["model_accuracy_on_unlabeled"] = float((predicted == truth).mean())
    out["model_confident_fraction"] = float(confident.mean())
    out["model_confident_accuracy"] = float((predicted[confident] == truth[confident]).mean()
                                            if confident.any() else float("nan"))
    out["threshold"] = threshold
  return out


def first_stage(config):
  """The stage that trains first (a `pretrain` chain's innermost), with the
  data, model and seed of `config` as training gives it them."""
  while config.get("pretrain") and config.pretrain.get("method"):
    config = train.pretrain_config(config)
  return config


def score_propagation(config) -> dict:
  """The propagation of `config`'s first stage (a `propagate` config) on its
  own split, before any training: the pseudo-labels' accuracy overall and per
  class on the unlabeled images, their class shares and the share warnings
  training would log."""
  config = first_stage(config)
  if config.method != "propagate":
    raise errors.ConfigError(f"a graph-only score needs a propagate config; the first stage "
                             f"of this one is {config.method!r}")
  setup = train.Setup(config)
  split, dataset = setup.split, setup.dataset
  data = inference.prepare_method(setup.parts)
  noted = train.ClassShares(config, setup, data)  # as training notes and warns them
  noted.pseudo_labels()
  pseudo = np.asarray(data.pseudo_labels)
  truth = dataset.train_labels[split.unlabeled]
  return dict(setup.method.record(), labeled_indices=[int(i) for i in split.labeled],
              pseudo_label_accuracy=float((pseudo == truth).mean()),
              per_class_accuracy=[float((pseudo[truth == c] == c).mean())
                                  for c in range(dataset.num_classes)],
              pseudo_label_shares=noted.record["pseudo_label_shares"],
              warnings=noted.record.get("class_share_warnings", []))


def graph_quality(features, labels, num_labeled: int, num_classes: int, *, k: int = 10,
                  dim: int = 64) -> dict:
  """Scores `features` [N, D] as graph features, the first `num_labeled` rows
  being the labeled examples: the share of each row's k nearest neighbours
  (cosine, after PCA to `dim`) that share its label, and on the other rows the
  accuracy of the nearest labeled example and of Poisson learning's labels
  (as `propagate` computes them, without refinement)."""
  mean, components = graph.fit_pca(features, dim)
  x = (np.asarray(features, np.float32) - mean) @ components
  x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-12
  neighbors, weights = graph.weighted_knn_graph(x, k)
  scores = graph.poisson_scores(neighbors, weights, np.arange(num_labeled),
                                labels[:num_labeled], num_classes=num_classes)
  poisson, _ = graph.confident_labels(scores[num_labeled:], 1.0)
  nearest = labels[:num_labeled][(x[num_labeled:] @ x[:num_labeled].T).argmax(1)]
  rest = labels[num_labeled:]
  return {"dim": int(features.shape[1]),
          f"knn{k}_purity": float((labels[neighbors] == labels[:, None]).mean()),
          "nearest_labeled_accuracy": float((nearest == rest).mean()),
          "poisson_accuracy": float((poisson == rest).mean())}


def layer_graphs(workdir: pathlib.Path) -> dict:
  """`graph_quality` of raw pixels and of each encoder layer of the run's
  network (EMA weights), on its own split's labeled + unlabeled images."""
  config = config_lib.from_saved(json.loads((workdir / "config.json").read_text()))
  setup = train.Setup(config)
  split, dataset = setup.split, setup.dataset
  order = np.concatenate([split.labeled, split.unlabeled])
  images, labels = dataset.train_images[order], dataset.train_labels[order]
  n, classes = split.labeled.size, dataset.num_classes
  out = {"pixels": graph_quality(images.reshape(len(images), -1) / 255.0, labels, n, classes)}
  for name, features in load_classifier(workdir, vote=False).layers(images).items():
    out[name] = graph_quality(features, labels, n, classes)
  return out


def main(argv):
  if len(argv) != 2:
    raise app.UsageError("usage: pseudo_labels.py RUN_WORKDIR [--threshold=0.95] [--layers]")
  workdir = pathlib.Path(argv[1])
  result = diagnose(workdir, flags.FLAGS.threshold)
  if flags.FLAGS.layers:
    result["layers"] = layer_graphs(workdir)
  (workdir / "pseudo_labels.json").write_text(json.dumps(result, indent=2))
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  # Defined here, not at import: stress.py and proposer.py import this module.
  flags.DEFINE_float("threshold", 0.95, "Confidence for the model's pseudo-labels.")
  flags.DEFINE_bool("layers", False, "Also score each encoder layer as graph features.")
  app.run(errors.guard(main))
