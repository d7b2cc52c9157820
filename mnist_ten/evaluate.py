"""Evaluators by name, chosen by `config.evals` (as big_vision's `config.evals`).

Each entry of `config.evals` is `name: {type (default: the name), every
(default: config.eval_every; -1: at the end only), options...}`. An evaluator
is built once per run from an `EvalContext` and called with an `EvalRound`
(the weights under test, a memo that evaluators share, e.g. the head's
probabilities); it returns
`{"<set>_<weights>": metrics}` for every eval set (`test`, and `val` when a
validation set is held out) and weights (`ema`, `raw`). Every evaluator also
runs at the end of training; `config.eval_report` names the one whose EMA
test accuracy is the run's result ("auto": vote, else flip, else head, else
knn, else linear_probe).

Predictions run on device in jit-compiled chunks; metrics on the host.
"""
import dataclasses
from typing import Any, Callable, Dict, List, Optional, Tuple

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from mnist_ten import datasets
from mnist_ten import models
from mnist_ten import neighbors
from mnist_ten import parallel
from mnist_ten.errors import ConfigError
from mnist_ten.registry import Registry

EVALUATORS: Registry = Registry("evaluator")
# The evaluator "auto" reports, by type, first present first.
_REPORT_ORDER = ("vote", "flip", "head", "knn", "linear_probe")


def classification_metrics(labels: np.ndarray, predictions: np.ndarray,
                           num_classes: int) -> Dict:
  """Accuracy, macro-F1, per-class accuracy (recall) and the confusion matrix
  (rows: true class, columns: predicted)."""
  confusion = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(confusion, (labels, predictions), 1)
  tp = np.diag(confusion).astype(np.float64)
  support = confusion.sum(1)
  predicted = confusion.sum(0)
  recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
  precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
  f1 = np.divide(2 * precision * recall, precision + recall,
                 out=np.zeros_like(tp), where=(precision + recall) > 0)
  present = support > 0
  return {"accuracy": float(tp.sum() / max(len(labels), 1)),
          "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
          "per_class_accuracy": recall.round(6).tolist(),
          "confusion": confusion.tolist()}


def make_predict(logits_fn: Callable, batch_size: int, sharding, argmax: bool = True) -> Callable:
  """Returns predict(variables, uint8 images on device) -> numpy class ids
  (or, with argmax=False, the raw outputs of logits_fn).

  `logits_fn(variables, float_images)` is evaluated in jit-compiled chunks of
  `batch_size` (the last one padded) sharded over the mesh; the outputs are
  gathered to every process.
  """
  gathered = None if sharding is None else parallel.replicated(sharding.mesh)

  @jax.jit
  def chunk_predict(variables, images):
    # Padded inside the step: with several processes, no array may mix the
    # mesh's devices with one process's own.
    images = jnp.pad(images, [(0, batch_size - images.shape[0])] + [(0, 0)] * (images.ndim - 1))
    if sharding is not None:
      images = jax.lax.with_sharding_constraint(images, sharding)
    out = logits_fn(variables, images.astype(jnp.float32) / 255.0)
    out = jnp.argmax(out, -1) if argmax else out
    return out if gathered is None else jax.lax.with_sharding_constraint(out, gathered)

  def predict(variables, images):
    n = images.shape[0]
    out = [np.asarray(chunk_predict(variables, images[i:i + batch_size]))
           for i in range(0, n, batch_size)]
    return np.concatenate(out)[:n]
  return predict


def make_knn_predict(features_fn: Callable, labeled_images, labeled_labels, num_classes: int,
                     batch_size: int, sharding, k: int = 1) -> Callable:
  """Like make_predict, but each image takes the class of its nearest labeled
  example by cosine similarity of `features_fn(variables, float_images)`:
  how well an encoder separates classes before any head is trained."""
  features_predict = make_predict(
      lambda v, x: neighbors.unit_jnp(features_fn(v, x)), batch_size, sharding, argmax=False)
  # On unit vectors the L2-nearest example is the cosine-nearest one. The
  # labeled features are an argument, not a constant: one compilation serves
  # every evaluation.
  nearest_predict = make_predict(
      lambda v_and_labeled, x: jax.nn.one_hot(neighbors.knn_predict(
          v_and_labeled[1], labeled_labels,
          neighbors.unit_jnp(features_fn(v_and_labeled[0], x)),
          k=k, num_classes=num_classes), num_classes),
      batch_size, sharding)

  def predict(variables, images):
    # On the mesh, like the variables it goes with.
    labeled = parallel.put_replicated(features_predict(variables, labeled_images),
                                      sharding.mesh if sharding is not None else None)
    return nearest_predict((variables, labeled), images)
  return predict


@dataclasses.dataclass
class EvalContext:
  """What evaluators may use: the model and method, the labeled examples
  (their labels are training data) and the eval sets (labels for metrics
  only, never for training)."""
  model: Any
  method: Any
  eval_sets: List[Any]  # input_pipeline.EvalSet
  labeled_images: jax.Array  # uint8, on the mesh
  labeled_labels: jax.Array
  num_classes: int
  batch_size: int
  sharding: Any  # batch-sharded over the mesh, or None
  steps_per_epoch: int = 0  # of the labeled set, for evaluators that count epochs
  _head_probs: Optional[Callable] = None

  @property
  def head_probs(self) -> Callable:
    """probs(variables, uint8 images) -> [N, C] numpy softmax of the head,
    one compiled function shared by every evaluator."""
    if self._head_probs is None:
      self._head_probs = make_predict(
          lambda v, x: jax.nn.softmax(self.model.apply(v, x, train=False)),
          self.batch_size, self.sharding, argmax=False)
    return self._head_probs

  def features_fn(self, variables, images):
    return self.model.apply(variables, images, train=False, output="features")


class EvalRound:
  """One evaluation: the weights under test by tag, a memo shared by the
  evaluators, and each evaluator's per-image predictions (for plots)."""

  def __init__(self, weights: Dict[str, Any], step: int = 0):
    self.weights = weights
    self.step = step
    self._memo = {}
    # (evaluator name, "<set>_<tag>") -> (predicted class [N], confidence [N])
    self.predictions: Dict[Tuple[str, str], Tuple[np.ndarray, np.ndarray]] = {}

  def memo(self, key, compute: Callable):
    if key not in self._memo:
      self._memo[key] = compute()
    return self._memo[key]


class Evaluator:
  """Base: `__call__(round) -> {"<set>_<tag>": metrics}`; `scores` gives the
  class scores [N, C] whose argmax is the prediction."""
  every: int = 0

  def __init__(self, name: str, cfg: dict, ctx: EvalContext):
    self.name = name
    self.cfg = cfg
    self.ctx = ctx

  @classmethod
  def applies(cls, method) -> bool:
    """False: skipped for this method (e.g. a vote without a voting method)."""
    return True

  def scores(self, rnd: EvalRound, tag: str, eval_set) -> np.ndarray:
    raise NotImplementedError

  def __call__(self, rnd: EvalRound) -> Dict[str, Dict]:
    out = {}
    for eval_set in self.ctx.eval_sets:
      for tag in rnd.weights:
        scores = self.scores(rnd, tag, eval_set)
        predicted = scores.argmax(-1)
        rnd.predictions[(self.name, f"{eval_set.name}_{tag}")] = (
            predicted, scores.max(-1) / np.maximum(scores.sum(-1), 1e-12))
        out[f"{eval_set.name}_{tag}"] = classification_metrics(
            eval_set.labels, predicted, self.ctx.num_classes)
    return out


@EVALUATORS.register("head")
class Head(Evaluator):
  """The classifier head's probabilities."""

  def scores(self, rnd, tag, eval_set):
    return rnd.memo(("head", tag, eval_set.name),
                    lambda: self.ctx.head_probs(rnd.weights[tag], eval_set.images))


@EVALUATORS.register("vote")
class Vote(Head):
  """The head's probabilities plus the method's vote (`Method.vote`, e.g.
  the graph's labels of the nearest training images): the prediction of a
  run whose method votes. The vote is fixed for the run: computed once."""

  @classmethod
  def applies(cls, method) -> bool:
    return bool(method.votes)

  def __init__(self, name, cfg, ctx):
    super().__init__(name, cfg, ctx)
    self.votes = {}
    for eval_set in ctx.eval_sets:
      vote = ctx.method.vote(eval_set.host_images)
      self.votes[eval_set.name] = vote
      logging.info("the method votes with the network; its vote alone is right on %.2f%% "
                   "of the %s images", 100 * np.mean(vote.argmax(1) == eval_set.labels),
                   eval_set.name)

  def scores(self, rnd, tag, eval_set):
    return super().scores(rnd, tag, eval_set) + self.votes[eval_set.name]


def mirror(images):
  """Each image [N, H, W, C] mirrored left to right (`flip` and load_classifier)."""
  return jnp.flip(images, axis=2)


@EVALUATORS.register("flip")
class FlipAverage(Head):
  """The head's probabilities averaged over each image and its mirror image
  (test-time augmentation), for data whose labels survive a horizontal flip
  (`data.hflip`: clothes, not digits; check_config refuses the others)."""

  def __init__(self, name, cfg, ctx):
    super().__init__(name, cfg, ctx)
    if any(s.images.ndim != 4 for s in ctx.eval_sets):
      raise ConfigError(f"evaluator {name!r} (type flip) mirrors images [N, H, W, C]; this "
                        "run's eval sets are not (bags: use evaluator mil)")
    self._mirror_probs = make_predict(
        lambda v, x: jax.nn.softmax(ctx.model.apply(v, mirror(x), train=False)),
        ctx.batch_size, ctx.sharding, argmax=False)

  def scores(self, rnd, tag, eval_set):
    mirror = rnd.memo(("flip", tag, eval_set.name),
                      lambda: self._mirror_probs(rnd.weights[tag], eval_set.images))
    return (super().scores(rnd, tag, eval_set) + mirror) / 2


@EVALUATORS.register("batches")
class Batches(Evaluator):
  """The head's accuracy on a few fixed batches of the labeled train images
  and of each eval set: a cheap curve of training and test accuracy, logged
  as a course's printout, `[epoch][batch] -> x% training accuracy y% testing
  accuracy`. Options: batches (5), of eval_batch_size images each."""

  def __init__(self, name, cfg, ctx):
    super().__init__(name, cfg, ctx)
    count = int(cfg.get("batches", 5))
    if count < 1:
      raise ConfigError(f"evals.{name}.batches={count} must be >= 1")
    rng = np.random.default_rng(0)

    def pick(n):  # the same images at every evaluation: a smooth curve
      return np.sort(rng.choice(n, min(n, count * ctx.batch_size), replace=False))
    train = pick(ctx.labeled_images.shape[0])
    self.sets = [("train", ctx.labeled_images[train], np.asarray(ctx.labeled_labels)[train])]
    for eval_set in ctx.eval_sets:
      some = pick(eval_set.labels.shape[0])
      self.sets.append((eval_set.name, eval_set.images[some], eval_set.labels[some]))

  def __call__(self, rnd):
    out = {}
    for set_name, images, labels in self.sets:
      for tag in rnd.weights:
        predicted = self.ctx.head_probs(rnd.weights[tag], images).argmax(-1)
        out[f"{set_name}_{tag}"] = classification_metrics(labels, predicted,
                                                          self.ctx.num_classes)
    tag = "raw" if "raw" in rnd.weights else next(iter(rnd.weights), None)
    if tag is not None and "test_" + tag in out:
      epoch, batch = divmod(rnd.step, max(self.ctx.steps_per_epoch, 1))
      logging.info("[%d][%d] -> %.1f%% training accuracy %.1f%% testing accuracy", epoch, batch,
                   100 * out["train_" + tag]["accuracy"], 100 * out["test_" + tag]["accuracy"])
    return out


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
  """Area under the ROC curve of `scores` for binary `labels` (ties count
  half): the Mann-Whitney statistic from ranks. NaN without both classes."""
  labels = np.asarray(labels).astype(bool)
  positives, n = int(labels.sum()), labels.size
  if positives in (0, n):
    return float("nan")
  ranks = scipy.stats.rankdata(np.asarray(scores, np.float64))
  return float((ranks[labels].sum() - positives * (positives + 1) / 2)
               / (positives * (n - positives)))


def mean_bag_auc(instance_labels: np.ndarray, weights: np.ndarray) -> float:
  """The mean over bags of the AUC of each bag's instance weights against
  its instance labels (-1: padding); bags without both kinds are skipped.
  Within a bag: the weights share 1 there, so they rank its own instances."""
  aucs = [roc_auc(labels[labels >= 0], w[labels >= 0])
          for labels, w in zip(instance_labels, weights)]
  aucs = [a for a in aucs if not np.isnan(a)]
  return float(np.mean(aucs)) if aucs else float("nan")


@EVALUATORS.register("mil")
class Bags(Evaluator):
  """Bags of instances (`data.bags`): bag accuracy and macro-F1 as `head`,
  the bag AUC of P(positive), and, for an attention pooling, the instance
  AUC: within each positive test bag, how well the attention weights rank
  its target instances above the others (the mean over bags)."""

  def __init__(self, name, cfg, ctx):
    super().__init__(name, cfg, ctx)
    if any(s.images.ndim != 5 for s in ctx.eval_sets):
      raise ConfigError(f"evaluator {name!r} (type mil) scores bags of instances; this "
                        "run's data are not bags (set data.bags, or use evaluator head)")

    def outputs(variables, bags):
      logits, weights = models.bag_outputs(ctx.model, variables, bags)
      if weights is None:
        weights = jnp.full(bags.shape[:2], jnp.nan)
      return jnp.concatenate([jax.nn.softmax(logits), weights], -1)
    self._predict = make_predict(outputs, ctx.batch_size, ctx.sharding, argmax=False)

  def _outputs(self, rnd, tag, eval_set):
    return rnd.memo(("mil", tag, eval_set.name),
                    lambda: self._predict(rnd.weights[tag], eval_set.images))

  def scores(self, rnd, tag, eval_set):
    return self._outputs(rnd, tag, eval_set)[:, :2]

  def __call__(self, rnd):
    out = super().__call__(rnd)
    for eval_set in self.ctx.eval_sets:
      for tag in rnd.weights:
        values = self._outputs(rnd, tag, eval_set)
        metrics = out[f"{eval_set.name}_{tag}"]
        metrics["auc"] = roc_auc(eval_set.labels, values[:, 1])
        weights = values[:, 2:]
        if eval_set.instance_labels is not None and not np.isnan(weights).all():
          positive = eval_set.labels == 1
          metrics["instance_auc"] = mean_bag_auc(eval_set.instance_labels[positive],
                                                 weights[positive])
    return out


@EVALUATORS.register("knn")
class NearestLabeled(Evaluator):
  """Each image takes the class of its k nearest labeled examples by cosine
  similarity of the encoder's features: how well an encoder separates classes
  before any head is trained. Options: k (1)."""

  def __init__(self, name, cfg, ctx):
    super().__init__(name, cfg, ctx)
    self.predict = make_knn_predict(ctx.features_fn, ctx.labeled_images, ctx.labeled_labels,
                                    ctx.num_classes, ctx.batch_size, ctx.sharding,
                                    k=int(cfg.get("k", 1)))

  def scores(self, rnd, tag, eval_set):
    predicted = self.predict(rnd.weights[tag], eval_set.images)
    return np.eye(self.ctx.num_classes, dtype=np.float32)[predicted]


@EVALUATORS.register("linear_probe")
class LinearProbe(Evaluator):
  """A linear classifier fitted on the labeled examples' encoder features
  (unit length, with a bias) by ridge regression onto one-hot targets, then
  applied to the eval sets: linear separability of what the encoder learned,
  with no head trained. Options: l2 (1e-2)."""

  def __init__(self, name, cfg, ctx):
    super().__init__(name, cfg, ctx)
    self.l2 = float(cfg.get("l2", 1e-2))
    if self.l2 <= 0:
      raise ConfigError(f"evals.{name}.l2={self.l2} must be > 0")
    self.features = make_predict(lambda v, x: neighbors.unit_jnp(ctx.features_fn(v, x)),
                                 ctx.batch_size, ctx.sharding, argmax=False)

  def _inputs(self, rnd, tag, images):
    """Unit-length features with a bias column, in float64 for the solve."""
    x = self.features(rnd.weights[tag], images).astype(np.float64)
    return np.concatenate([x, np.ones((x.shape[0], 1))], 1)

  def _weights(self, rnd, tag):
    def fit():
      x = self._inputs(rnd, tag, self.ctx.labeled_images)
      y = np.eye(self.ctx.num_classes)[np.asarray(self.ctx.labeled_labels)]
      # The dual form: as many unknowns as labeled examples, however wide the features.
      return x.T @ np.linalg.solve(x @ x.T + self.l2 * np.eye(x.shape[0]), y)
    return rnd.memo(("linear_probe", self.l2, tag), fit)

  def scores(self, rnd, tag, eval_set):
    logits = self._inputs(rnd, tag, eval_set.images) @ self._weights(rnd, tag)
    logits = np.exp(logits - logits.max(-1, keepdims=True))
    return (logits / logits.sum(-1, keepdims=True)).astype(np.float32)


def kinds(config, method=None) -> Dict[str, str]:
  """{name: evaluator type} of `config.evals`, sorted by name; with `method`,
  only those that apply to it."""
  out = {}
  for name, cfg in sorted(config.evals.items()):
    kind = cfg.get("type", name)
    cls = EVALUATORS.get(kind)  # refuses an unknown type, with or without a method
    if method is None or cls.applies(method):
      out[name] = kind
  return out


def build(config, ctx: EvalContext, only=None) -> Dict[str, Evaluator]:
  """The evaluators `config.evals` lists that apply to the run's method, by
  name (`only`: those named)."""
  built = {}
  for name, kind in kinds(config, ctx.method).items():
    if only is not None and name not in only:
      continue
    cfg = dict(config.evals[name])
    cfg.pop("type", None)
    every = cfg.pop("every", 0) or config.eval_every
    evaluator = EVALUATORS.get(kind)(name, cfg, ctx)
    evaluator.kind, evaluator.every = kind, every
    built[name] = evaluator
  return built


def report_name(config, evaluators: Dict[str, Evaluator]) -> str:
  """The evaluator whose EMA test accuracy is the run's result."""
  return _pick_report(config, {name: e.kind for name, e in evaluators.items()})


def report_for(config, method) -> str:
  """`report_name` from the config alone (the evaluators that apply to `method`)."""
  return _pick_report(config, kinds(config, method))


def _pick_report(config, by_name: Dict[str, str]) -> str:
  if config.eval_report != "auto":
    return config.eval_report
  for kind in _REPORT_ORDER:
    for name in sorted(by_name):
      if by_name[name] == kind:
        return name
  return sorted(by_name)[0]


def check_config(config, method=None):
  """Known evaluator types, whole cadences, and a report that names one of them."""
  if not config.evals:
    raise ConfigError("config.evals is empty: a run needs at least one evaluator "
                      f"(known: {', '.join(EVALUATORS)})")
  for name, cfg in config.evals.items():
    every = cfg.get("every", 0)
    if not isinstance(every, int) or every < -1 or (every > 0 and every % config.steps_per_dispatch):
      raise ConfigError(f"evals.{name}.every={every!r} must be 0 (eval_every), -1 (at the end "
                        f"only) or a positive multiple of steps_per_dispatch="
                        f"{config.steps_per_dispatch}")
  names = list(kinds(config, method))  # unknown types are refused here
  flips = [n for n, kind in kinds(config).items() if kind == "flip"]
  if flips and not datasets.hflip_allowed(config.data):
    raise ConfigError(f"evaluator {flips[0]!r} averages each test image with its mirror image, "
                      f"but a mirror image changes {config.data.name!r}'s labels (data.hflip="
                      f"{config.data.hflip!r}); remove it, or set data.hflip=true if flips keep "
                      "the labels")
  if not names:
    raise ConfigError(f"none of config.evals ({', '.join(sorted(config.evals))}) applies to "
                      f"method {config.method!r}; add one, e.g. head")
  if config.eval_report != "auto" and config.eval_report not in names:
    raise ConfigError(f"eval_report={config.eval_report!r} names no evaluator of this run "
                      f"(config.evals: {', '.join(sorted(names))})")


def due(evaluators: Dict[str, Evaluator], step: int, final: bool) -> List[str]:
  return [name for name, e in evaluators.items()
          if final or (e.every > 0 and step % e.every == 0)]


def scalars(out: Dict[str, Dict[str, Dict]]) -> Dict[str, float]:
  """TensorBoard scalars of one round: "<evaluator>/<set>/accuracy_<tag>"."""
  flat = {}
  for name, per_key in out.items():
    for key, metrics in per_key.items():
      split_name, tag = key.rsplit("_", 1)
      flat[f"{name}/{split_name}/accuracy_{tag}"] = metrics["accuracy"]
      flat[f"{name}/{split_name}/macro_f1_{tag}"] = metrics["macro_f1"]
      for extra in ("auc", "instance_auc"):  # bags (evaluator mil)
        if extra in metrics:
          flat[f"{name}/{split_name}/{extra}_{tag}"] = metrics[extra]
  return flat
