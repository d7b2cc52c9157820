"""The figures of a finished run, by name: PNGs in WORKDIR/plots/ and the
same images in TensorBoard.

    python -m mnist_ten.plots WORKDIR [WORKDIR ...]   # redraws a finished run's figures

Every plot is a function `plot(run: RunView) -> matplotlib Figure | None`
registered in `PLOTS` (None: it does not apply to this run, e.g. no
pseudo-labels). matplotlib and scikit-learn come with the `[plots]` extra;
without them a run still finishes and says how to get its figures. Figures
are drawn without pyplot, so no display is ever needed.
"""
import dataclasses
import io
import json
import pathlib
import sys
from typing import Callable, Dict, List, Optional, Tuple

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from mnist_ten import config as config_lib
from mnist_ten import datasets
from mnist_ten import errors
from mnist_ten import evaluate
from mnist_ten import inference
from mnist_ten import input_pipeline
from mnist_ten import models
from mnist_ten import run as run_lib
from mnist_ten.metric_writer import MetricWriter
from mnist_ten.registry import Registry

PLOTS: Registry = Registry("plot")
MAX_WRONG = 36  # misclassified test images shown


@dataclasses.dataclass
class RunView:
  """What a plot may read of a finished run. `predictions` are the reported
  evaluator's on the test set (EMA weights): (predicted class [N],
  confidence [N]); `features` the encoder's features of the test images."""
  workdir: pathlib.Path
  parts: run_lib.Parts
  predictions: Optional[Tuple[np.ndarray, np.ndarray]] = None
  features: Optional[Callable[[], np.ndarray]] = None
  report: str = ""
  # The trained network (EMA weights): uint8 images -> class probabilities.
  classify: Optional[Callable[[np.ndarray], np.ndarray]] = None
  # A bag model's attention: uint8 bags -> weights [B, L], or None (no attention).
  attention: Optional[Callable[[np.ndarray], Optional[np.ndarray]]] = None

  @property
  def test_images(self) -> np.ndarray:
    return self.parts.dataset.test_images

  @property
  def test_labels(self) -> np.ndarray:
    return self.parts.dataset.test_labels

  def jsonl(self, name: str) -> List[dict]:
    path = self.workdir / name
    if not path.exists():
      return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

  def results(self) -> dict:
    path = self.workdir / "results.json"
    return json.loads(path.read_text()) if path.exists() else {}


def figure(width: float, height: float):
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  return Figure(figsize=(width, height), dpi=100)


def show(ax, image, title: str = "", fontsize: int = 7):
  image = np.asarray(image)
  if image.dtype != np.uint8:  # floats in [0, 1] (the views) -> pixels
    image = (np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
  if image.shape[-1] == 1:
    ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255)
  else:
    ax.imshow(image)
  ax.set_xticks([])
  ax.set_yticks([])
  if title:
    ax.set_title(title, fontsize=fontsize)


def wrong_indices(labels: np.ndarray, predicted: np.ndarray, confidence: np.ndarray,
                  limit: int = MAX_WRONG) -> np.ndarray:
  """The misclassified test images, most confident mistakes first."""
  wrong = np.flatnonzero(predicted != labels)
  return wrong[np.argsort(-confidence[wrong], kind="stable")][:limit]


@PLOTS.register("wrong_predictions")
def wrong_predictions(run: RunView):
  """Misclassified test images with true and predicted class and confidence
  (images only: 2-D points show theirs in decision_regions)."""
  shape = run.parts.image_shape
  if run.predictions is None or datasets.is_points(shape) or datasets.is_bags(shape):
    return None
  predicted, confidence = run.predictions
  idx = wrong_indices(run.test_labels, predicted, confidence)
  cols = 9
  rows = max(1, -(-len(idx) // cols))
  fig = figure(cols * 1.2, rows * 1.4 + 0.4)
  fig.suptitle(f"{int((predicted != run.test_labels).sum())} of {len(predicted)} test images "
               "misclassified (most confident first): true → predicted (confidence)",
               fontsize=8)
  for i, j in enumerate(idx):
    ax = fig.add_subplot(rows, cols, i + 1)
    label = run.parts.class_label
    show(ax, run.test_images[j],
         f"{label(run.test_labels[j])}→{label(predicted[j])} ({confidence[j]:.2f})")
  return fig


@PLOTS.register("confusion")
def confusion(run: RunView):
  """The test set's confusion matrix (rows: true class)."""
  if run.predictions is None:
    return None
  c = run.parts.num_classes
  matrix = np.zeros((c, c), np.int64)
  np.add.at(matrix, (run.test_labels, run.predictions[0]), 1)
  fig = figure(6, 5.5)
  ax = fig.add_subplot(1, 1, 1)
  im = ax.imshow(np.log1p(matrix), cmap="Blues")
  for (i, j), n in np.ndenumerate(matrix):
    if n:
      ax.text(j, i, str(n), ha="center", va="center", fontsize=6,
              color="white" if n > matrix.max() / 2 else "black")
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  names = [run.parts.class_label(i) for i in range(c)]
  ax.set_xticks(range(c), names, rotation=45 if run.parts.class_names else 0, ha="right"
                if run.parts.class_names else "center", fontsize=7)
  ax.set_yticks(range(c), names, fontsize=7)
  accuracy = np.trace(matrix) / max(matrix.sum(), 1)
  ax.set_title(f"test confusion ({run.report}, EMA): accuracy {accuracy:.2%}", fontsize=9)
  fig.colorbar(im, ax=ax, label="log(1 + count)")
  return fig


@PLOTS.register("accuracy")
def accuracy(run: RunView):
  """Test accuracy of every evaluator over steps (EMA and raw weights)."""
  curves: Dict[str, List[Tuple[int, float]]] = {}
  for record in run.jsonl("evals.jsonl"):
    for name, out in record.items():
      if isinstance(out, dict):
        for key, metrics in out.items():
          if key.startswith("test_") and isinstance(metrics, dict):
            curves.setdefault(f"{name} ({key[5:]})", []).append(
                (record["step"], metrics["accuracy"]))
  if not curves:
    return None
  # The last record of a step wins (a resumed run may log a step twice).
  return _curves({label: {s: 100 * a for s, a in points} for label, points in curves.items()},
                 "test accuracy (%)", markers=True, steps_per_epoch=_steps_per_epoch(run))


def _steps_per_epoch(run: RunView) -> int:
  """Of a run trained by epochs (config.num_epochs), else 0."""
  config = run.parts.config
  if not config.get("num_epochs"):
    return 0
  return config_lib.steps_per_epoch(config, run.parts.split.labeled.size)


def _curves(curves: Dict[str, Dict[int, float]], ylabel: str, *, markers: bool = False,
            log: bool = False, steps_per_epoch: int = 0):
  """One line per curve ({label: {step: value}}) over steps, and over epochs
  on a second axis when `steps_per_epoch` is given."""
  fig = figure(6, 4)
  ax = fig.add_subplot(1, 1, 1)
  for label, points in sorted(curves.items()):
    steps = sorted(points)
    ax.plot(steps, [points[s] for s in steps], label=label,
            **({"marker": "o", "markersize": 3} if markers else {}))
  ax.set_xlabel("step")
  ax.set_ylabel(ylabel)
  if steps_per_epoch:
    top = ax.secondary_xaxis("top", functions=(lambda s: s / steps_per_epoch,
                                               lambda e: e * steps_per_epoch))
    top.set_xlabel("epoch")
  if log:
    ax.set_yscale("log")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  return fig


@PLOTS.register("losses")
def losses(run: RunView):
  """The total loss and each loss term over steps (means of each log window)."""
  records = run.jsonl("metrics.jsonl")
  keys = sorted({k for r in records for k in r if k == "loss" or k.startswith("loss/")})
  if not keys:
    return None
  curves = {key: {r["step"]: r[key] for r in records if key in r and np.isfinite(r[key])}
            for key in keys}
  return _curves({k: v for k, v in curves.items() if v}, "loss", log=True)


@PLOTS.register("views")
def views(run: RunView):
  """A grid of the views the method trains on (`Method.views`; images only)."""
  parts = run.parts
  if (not parts.method.trains or datasets.is_points(parts.image_shape)
      or datasets.is_bags(parts.image_shape)):
    return None
  split, train_images = parts.split, parts.dataset.train_images
  n = 8
  labeled = jnp.asarray(train_images[split.labeled[:n]], jnp.float32) / 255.0
  unlabeled_idx = split.unlabeled[:n] if split.unlabeled.size else split.labeled[:n]
  unlabeled = jnp.asarray(train_images[unlabeled_idx], jnp.float32) / 255.0
  # Compiled: run eagerly, op by op, the augmentations take seconds.
  shown = jax.jit(parts.method.views)(jax.random.PRNGKey(0), labeled, unlabeled)
  if not shown:
    return None
  fig = figure(n * 1.1 + 1.5, len(shown) * 1.2 + 0.3)
  for r, (name, images) in enumerate(shown.items()):
    images = np.asarray(images)
    for c in range(min(n, images.shape[0])):
      ax = fig.add_subplot(len(shown), n, r * n + c + 1)
      show(ax, images[c])
      if c == 0:
        ax.set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
  fig.suptitle(f"what {parts.config.method} trains on (one draw)", fontsize=8)
  return fig


@PLOTS.register("pseudo_labels")
def pseudo_labels(run: RunView):
  """How the kept pseudo-labels spread over the classes (needs no true label)."""
  counts = run.results().get("pseudo_label_counts")
  if not counts:
    return None
  fig = figure(6, 3.5)
  ax = fig.add_subplot(1, 1, 1)
  ax.bar(range(len(counts)), counts)
  ax.axhline(sum(counts) / len(counts), color="gray", linestyle="--", label="equal shares")
  ax.set_xticks(range(len(counts)),
                [run.parts.class_label(c) for c in range(len(counts))],
                rotation=45 if run.parts.class_names else 0, fontsize=7)
  ax.set_xlabel("pseudo-label")
  ax.set_ylabel("unlabeled images")
  ax.legend(fontsize=7)
  return fig


@PLOTS.register("samples")
def samples(run: RunView):
  """Histograms of the random quantities the method draws (`Method.samples`,
  e.g. mixup's lambda)."""
  if not run.parts.method.trains:
    return None
  drawn = jax.jit(run.parts.method.samples)(jax.random.PRNGKey(0))
  if not drawn:
    return None
  fig = figure(5 * len(drawn), 3.5)
  for i, (name, values) in enumerate(drawn.items()):
    ax = fig.add_subplot(1, len(drawn), i + 1)
    ax.hist(np.asarray(values), bins=40)
    ax.set_xlabel(name)
    ax.set_ylabel("count")
  return fig


@PLOTS.register("decision_regions")
def decision_regions(run: RunView):
  """2-D points only: the trained network's class over the whole square, the
  test points in their true class's colour (mistakes crossed), the labeled
  points as stars."""
  if run.classify is None or not datasets.is_points(run.parts.image_shape):
    return None
  levels = np.arange(256, dtype=np.uint8)
  grid = np.stack(np.meshgrid(levels, levels, indexing="ij"), -1).reshape(-1, 1, 1, 2)
  regions = run.classify(grid).argmax(-1).reshape(256, 256)  # [x level, y level]
  fig = figure(6, 6)
  ax = fig.add_subplot(1, 1, 1)
  ax.imshow(regions.T, origin="lower", extent=(-1, 1, -1, 1), cmap="tab10", vmin=0, vmax=9,
            alpha=0.3, interpolation="nearest")
  points = datasets.pixels_to_points(run.test_images)
  ax.scatter(points[:, 0], points[:, 1], c=run.test_labels, cmap="tab10", vmin=0, vmax=9, s=4)
  if run.predictions is not None:
    wrong = run.predictions[0] != run.test_labels
    ax.scatter(points[wrong, 0], points[wrong, 1], marker="x", c="black", s=25,
               label=f"{int(wrong.sum())} wrong")
  labeled = run.parts.split.labeled
  if labeled.size <= 100:
    shown = datasets.pixels_to_points(run.parts.dataset.train_images[labeled])
    ax.scatter(shown[:, 0], shown[:, 1], marker="*", s=250, c="white", edgecolors="black",
               label="labeled")
  ax.set_xlim(-1, 1)
  ax.set_ylim(-1, 1)
  ax.set_title("decision regions (EMA network) and the test points", fontsize=9)
  if ax.get_legend_handles_labels()[0]:
    ax.legend(loc="upper right", fontsize=7)
  return fig


@PLOTS.register("bags")
def bags(run: RunView):
  """Bags only: a few test bags, positive and negative, one per row, each
  instance with its attention weight (targets framed in red), and the
  bag's true label and predicted P(positive)."""
  if not datasets.is_bags(run.parts.image_shape) or run.classify is None:
    return None
  labels = run.test_labels
  rows = np.concatenate([np.flatnonzero(labels == 1)[:3], np.flatnonzero(labels == 0)[:2]])
  instances, mask = datasets.unpack_bags(run.test_images[rows])
  probs = run.classify(run.test_images[rows])[:, 1]
  weights = run.attention(run.test_images[rows]) if run.attention is not None else None
  targets = run.parts.dataset.test_instance_labels
  cols = int(mask.sum(1).max())
  fig = figure(cols * 1.0 + 0.5, len(rows) * 1.25 + 0.5)
  for r, bag in enumerate(rows):
    for c in range(int(mask[r].sum())):
      ax = fig.add_subplot(len(rows), cols, r * cols + c + 1)
      show(ax, instances[r, c], f"{weights[r, c]:.2f}" if weights is not None else "")
      if targets is not None and targets[bag, c] == 1:
        for spine in ax.spines.values():
          spine.set_edgecolor("red")
          spine.set_linewidth(2.5)
      if c == 0:
        ax.set_ylabel(f"y={labels[bag]}\np={probs[r]:.2f}", fontsize=7, rotation=0,
                      ha="right", va="center")
  fig.suptitle("test bags (rows): each instance's attention weight; targets in red; "
               "y: bag label, p: predicted P(positive)" if weights is not None else
               "test bags (rows): targets in red; y: bag label, p: predicted P(positive)",
               fontsize=8)
  return fig


@PLOTS.register("features")
def features(run: RunView):
  """A 2-D map (PCA) of the test set's encoder features, coloured by true class."""
  if run.features is None:
    return None
  from sklearn.decomposition import PCA  # pylint: disable=g-import-not-at-top
  feats = np.asarray(run.features(), np.float64)
  xy = PCA(n_components=2, random_state=0).fit_transform(feats)
  fig = figure(6, 5.5)
  ax = fig.add_subplot(1, 1, 1)
  points = ax.scatter(xy[:, 0], xy[:, 1], c=run.test_labels, cmap="tab10", s=2,
                      vmin=-0.5, vmax=run.parts.num_classes - 0.5)
  bar = fig.colorbar(points, ax=ax, ticks=range(run.parts.num_classes), label="true class")
  bar.ax.set_yticklabels([run.parts.class_label(c) for c in range(run.parts.num_classes)],
                         fontsize=7)
  ax.set_title("test features (encoder), first two principal components", fontsize=9)
  ax.set_xticks([])
  ax.set_yticks([])
  return fig


def _png(fig) -> bytes:
  buf = io.BytesIO()
  fig.savefig(buf, format="png", bbox_inches="tight")
  return buf.getvalue()


def draw(view: RunView, writer=None, step: int = 0) -> List[pathlib.Path]:
  """Draws every registered plot that applies into `view.workdir/plots/`
  (and `writer`'s TensorBoard events); returns the files written."""
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top,unused-import
    import sklearn  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    logging.warning("no plots (%s): pip install -e '.[plots]', then "
                    "python -m mnist_ten.plots %s", e, view.workdir)
    return []
  out_dir = view.workdir / "plots"
  out_dir.mkdir(exist_ok=True)
  written = []
  for name in PLOTS:
    fig = PLOTS.get(name)(view)
    if fig is None:
      continue
    png = _png(fig)
    path = out_dir / f"{name}.png"
    path.write_bytes(png)
    written.append(path)
    if writer is not None:
      writer.write_image(step, f"plots/{name}", png)
  logging.info("plots: %s in %s", ", ".join(p.stem for p in written), out_dir)
  return written


def draw_run(workdir, *, parts, round_=None, report: str = "", state=None, writer=None):
  """The end of a run: its figures from the final evaluation (`round_`, an
  `evaluate.EvalRound`) and, for a trained model, its EMA weights."""
  workdir = pathlib.Path(workdir)
  predictions = None
  if round_ is not None:
    predictions = round_.predictions.get((report, "test_ema"))
  network = variables = None
  if state is not None and parts.model is not None:
    variables = jax.device_put(jax.tree.map(np.asarray, state.variables("ema")))
    network = _network(parts, variables)
  step = int(state.step) if state is not None else 0
  return draw(_view(workdir, parts, predictions, report, network, variables), writer, step)


def _attention(parts, variables):
  def attention(bags):
    _, weights = models.bag_outputs(parts.model, variables, jnp.asarray(bags, jnp.float32) / 255.0)
    return None if weights is None else np.asarray(weights)
  return attention


def _network(parts, variables) -> inference.Classifier:
  return inference.Classifier(
      lambda x: jax.nn.softmax(parts.model.apply(variables, x, train=False)), parts.image_shape,
      parts.num_classes,
      features_fn=lambda x: parts.model.apply(variables, x, train=False, output="features"))


def _view(workdir, parts, predictions, report, network=None, variables=None) -> RunView:
  """The RunView of a run; the test images' encoder features are computed
  when a plot asks."""
  if network is None:
    return RunView(workdir, parts, predictions, None, report)
  return RunView(workdir, parts, predictions,
                 lambda: network.features(parts.dataset.test_images), report,
                 classify=lambda images: network(images)[1],
                 attention=_attention(parts, variables)
                 if datasets.is_bags(parts.image_shape) else None)


def redraw(workdir) -> List[pathlib.Path]:
  """A finished run's figures again, from its workdir alone: its latest
  checkpoint evaluated on the test set by the evaluator the run reported,
  as the run evaluated itself (a graph's vote is rebuilt, about a minute)."""
  workdir = pathlib.Path(workdir)
  parts = run_lib.Parts.from_workdir(workdir)
  results = json.loads((workdir / "results.json").read_text()) if (
      workdir / "results.json").exists() else {}
  dataset = parts.dataset
  if not parts.method.trains:  # nearest neighbour: the labeled examples are the model
    _, probs = inference.load_classifier(workdir)(dataset.test_images)
    report, predictions, network = "predict", (probs.argmax(-1), probs.max(-1)), None
  else:
    variables = jax.device_put(run_lib.load_weights(workdir))
    report = results.get("report_eval") or evaluate.report_for(parts.config, parts.method)
    if evaluate.kinds(parts.config).get(report) == "vote":
      inference.prepare_method(parts)  # the vote's graph, as training built it
    labeled = parts.split.labeled
    ctx = evaluate.EvalContext(
        model=parts.model, method=parts.method,
        eval_sets=[input_pipeline.EvalSet("test", jnp.asarray(dataset.test_images),
                                          dataset.test_labels, dataset.test_images)],
        labeled_images=jnp.asarray(dataset.train_images[labeled]),
        labeled_labels=jnp.asarray(dataset.train_labels[labeled].astype(np.int32)),
        num_classes=parts.num_classes, batch_size=parts.config.eval_batch_size, sharding=None)
    evaluator = evaluate.build(parts.config, ctx, only=(report,))[report]
    rnd = evaluate.EvalRound({"ema": variables})
    evaluator(rnd)
    predictions, network = rnd.predictions[(report, "test_ema")], _network(parts, variables)
  writer = MetricWriter(workdir)
  try:
    return draw(_view(workdir, parts, predictions, report, network,
                      None if network is None else variables), writer,
                int(results.get("steps", 0)))
  finally:
    writer.close()


def main(argv):
  if len(argv) < 2:
    errors.fail("usage: python -m mnist_ten.plots WORKDIR [WORKDIR ...]")
  logging.set_verbosity(logging.INFO)
  for workdir in argv[1:]:
    print("\n".join(str(p) for p in redraw(workdir)))
  return 0


if __name__ == "__main__":
  sys.exit(errors.guard(main)(sys.argv))
