"""Pseudo-labels propagated over a graph, then training on them.

Before training (`prepare`), the labels of the few labeled examples are
propagated to every unlabeled image by Poisson learning on a k-nearest-
neighbour graph (`mnist_ten.graph`); each class keeps its most confident
`keep` fraction. The loss is cross-entropy on the augmented labeled batch
plus `lambda_u` times the weighted cross-entropy of strongly augmented
unlabeled images against their pseudo-labels: the network, trained with
augmentations the graph knows nothing about, generalises past the graph's
own mistakes.

Graph features are a pipeline string of blocks, `propagate.features` (see
`graph.FEATURES`, e.g. "hog(cell=4, dim=64)|deskew(dim=64)"); the block `encoder` uses the encoder of the run in
`config.init_from` (its EMA weights), so a second round can propagate over
what the first round learned; `agree_with_init` keeps only the pseudo-labels
that run's network agrees with.

`vote` = k > 0 lets the graph predict too: an image to classify takes the
pseudo-labels of its k nearest training images in the graph's features
(`graph.knn_vote`; the image never joins the graph), and that vote is added
to the network's probabilities. The network reproduces some of the graph's
mistakes and makes others of its own; on MNIST the sum is right more often
than either alone (docs/default_recipe.md, "The vote").

`refine` = r > 0 corrects the propagated labels before training
(`graph.refine_labels`): a group of images that Poisson learning put in
one class moves to another when its edges to that class weigh r times its
edges to the rest of its own (2.0 in `default`; 0: off).

`consistency` > 0 adds FixMatch's term on top (off by default): the network's
own confident prediction on a weakly augmented view (no gradient) is a second
target for the strong view, so where the network is sure the graph is wrong
the two targets compete instead of the graph always winning. It costs a
forward pass of the weak views. Which predictions count is the rule of the
FixMatch-family method `consistency_rule`, its `unlabeled_term` and state
reused as they are: "fixmatch" (probability >= `threshold`), "flexmatch",
"freematch" or "softmatch" (their adaptive thresholds or weights, with their
papers' options, `FlexMatch.OPTIONS` etc., or the config's own
`flexmatch`/... section when it has one; `threshold` is their tau).
"""
import time

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mnist_ten import graph
from mnist_ten import losses
from mnist_ten import shares
from mnist_ten.errors import ConfigError
from mnist_ten.methods import METHODS, Method
from mnist_ten.methods.fixmatch import FixMatch


@METHODS.register("propagate")
class Propagate(Method):

  def __init__(self, config, ctx):
    super().__init__(config, ctx)
    cfg = config.propagate
    self.labeled_batch_size = config.batch_size
    self.unlabeled_batch_size = config.batch_size * cfg.mu
    self.labeled_augment = ctx.augmenter(config.augment.labeled)
    self.strong = ctx.augmenter(config.augment.strong)
    self.consistency = float(cfg.get("consistency", 0.0))
    if self.consistency < 0:
      raise ConfigError(f"propagate.consistency={self.consistency} must be >= 0")
    self.weak = self.rule = None
    if self.consistency:
      if not config.augment.get("weak"):
        raise ConfigError("propagate.consistency > 0 needs config.augment.weak (the view "
                          "whose confident predictions are the targets)")
      self.weak = ctx.augmenter(config.augment.weak)
      self.rule = _consistency_rule(config, ctx)
    if not 0.0 < cfg.keep <= 1.0:
      raise ConfigError(f"propagate.keep={cfg.keep} must be in (0, 1]")
    self.vote_k = cfg.get("vote", 0)
    if isinstance(self.vote_k, bool) or not isinstance(self.vote_k, int) or self.vote_k < 0:
      raise ConfigError(f"propagate.vote={self.vote_k!r} must be a whole number >= 0 "
                        "(0: the network predicts alone)")
    self.votes = bool(self.vote_k)
    self.refine = float(cfg.get("refine", 0.0))
    bounds = tuple(cfg.get("size_bounds", ()))
    if bounds and not (len(bounds) == 2 and 0.0 <= bounds[0] <= 1.0 <= bounds[1]):
      raise ConfigError(f"propagate.size_bounds={bounds!r} must be () (off) or (low, high) "
                        "with 0 <= low <= 1 <= high: each class's pseudo-labels between low "
                        "and high times the size the labeled set implies")
    self.reseed = float(cfg.get("reseed", 0.0))
    if not 0.0 <= self.reseed < 1.0:
      raise ConfigError(f"propagate.reseed={self.reseed} must be 0 (off) or in (0, 1): a class "
                        "whose pseudo-labels fall below that fraction of the share the labeled "
                        "set implies is re-seeded")
    if self.refine and self.refine < 1.0:
      raise ConfigError(f"propagate.refine={self.refine} must be 0 (off) or >= 1: a group "
                        "moves when its edges to another class weigh `refine` times "
                        "those to its own")
    self._memory = None  # (embedding, features, labels) of the graph, for `vote`
    self._record = {}  # what `prepare` found, for results.json (`record`)
    self.uses_encoder = any(name == "encoder" for name, _ in
                            graph.parse_features(cfg.features))
    self.uses_init_network = self.uses_encoder or cfg.get("agree_with_init", False)
    if self.uses_init_network and not config.init_from:
      raise ConfigError("propagate.features holds 'encoder' or propagate.agree_with_init "
                        "is set, but config.init_from is empty: both use the run it names")

  def prepare(self, data, init_network=None):
    cfg = self.config.propagate
    labeled = np.asarray(data.labeled_images)
    images = np.concatenate([labeled, np.asarray(data.unlabeled_images)])
    extra, classifier = {}, init_network
    if self.uses_init_network:
      if classifier is None:
        raise RuntimeError("propagate: prepare() needs the network of config.init_from")
      # The network alone: its features, and its predictions for agree_with_init.
      extra["encoder"] = lambda x: jnp.asarray(classifier.features(np.asarray(x)))
    # Seconds per stage, logged: on an accelerator they, not the steps,
    # are most of a round.
    seconds, t = {}, time.perf_counter()

    def lap(name):
      nonlocal t
      seconds[name], t = time.perf_counter() - t, time.perf_counter()

    embedding, features = graph.fit_embedding(images, cfg.features, extra=extra)
    lap("features")
    n_lab = labeled.shape[0]
    neighbors, weights = graph.weighted_knn_graph(features, cfg.k)
    lap("kNN graph")
    scores = graph.poisson_scores(neighbors, weights, np.arange(n_lab),
                                  np.asarray(data.labeled_labels),
                                  num_classes=self.ctx.num_classes, iterations=cfg.iterations)
    lap("Poisson learning")
    sizes = self._size_bounds(data, len(images) - n_lab)
    labels, mask = graph.confident_labels(scores[n_lab:], cfg.keep, sizes=sizes)
    self._record = {}
    if sizes is not None or self.reseed:
      # The shares Poisson learning gave tell whether a class had vanished:
      # the trainer warns on them (train.ClassShares); bounds and re-seeding
      # hide it after.
      raw, _ = graph.confident_labels(scores[n_lab:], cfg.keep)
      self._record["raw_pseudo_label_shares"] = shares.class_shares(
          raw, self.ctx.num_classes).round(6).tolist()
    if sizes is not None:
      self._record["size_bounds_moved"] = int((raw != labels).sum())
      logging.info("propagate: the size bounds moved %d pseudo-labels",
                   self._record["size_bounds_moved"])
    if self.reseed:
      labels = self._reseed(data, neighbors, weights, scores, labels)
      lap("re-seeding")
    if self.refine:
      # The labeled nodes keep their labels; a moved group keeps the mask
      # its nodes had under their old label.
      refined, groups = graph.refine_labels(
          neighbors, weights, np.concatenate([np.asarray(data.labeled_labels), labels]),
          np.arange(features.shape[0]) < n_lab, num_classes=self.ctx.num_classes,
          ratio=self.refine)
      logging.info("propagate: refinement moved %d groups, %d images relabelled",
                   groups, int((refined[n_lab:] != labels).sum()))
      labels = refined[n_lab:]
      lap("refinement")
    if self.vote_k:
      # The vote's memory: the labeled images and the kept pseudo-labels.
      keep = np.concatenate([np.ones(n_lab, bool), mask > 0])
      self._memory = (embedding, features[keep],
                      np.concatenate([np.asarray(data.labeled_labels), labels])[keep])
    if cfg.get("agree_with_init", False):
      # Two views that err differently: the graph (neighbours) and the
      # previous round's network (trained with deformations). Where they
      # disagree the pseudo-label is dropped.
      predicted, _ = classifier(np.asarray(data.unlabeled_images))
      mask = mask * (predicted == labels)
      lap("agreement")
    logging.info("propagate: %s", ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
    self._record["prepare_phases"] = {k: round(v, 3) for k, v in seconds.items()}
    return data.replace(pseudo_labels=np.asarray(labels, np.int32),
                        pseudo_weights=np.asarray(mask, np.float32))

  def _reseed(self, data, neighbors, weights, scores, labels):
    """`graph.reseed_vanished` on the unlabeled images' labels, recorded and logged."""
    n_lab = np.asarray(data.labeled_labels).shape[0]
    reseeded, moves = graph.reseed_vanished(
        neighbors, weights, scores, np.concatenate([np.asarray(data.labeled_labels), labels]),
        np.arange(scores.shape[0]) < n_lab, self._expected_shares(data), low=self.reseed)
    self._record["reseeded"] = [dict(to_class=a, from_class=b, images=m,
                                     conductance=round(c, 4), former_reassigned=r,
                                     former_to_class=to) for a, b, m, c, r, to in moves]
    for a, b, m, c, r, to in moves:
      logging.warning("propagate: class %d had vanished (below %.2fx its share); %d images "
                      "of class %d's pseudo-labels, one side of its weakest cut (conductance "
                      "%.3f), now seed it%s", a, self.reseed, m, b, c,
                      f"; the {r} images it held before went to class {to}" if r else "")
    return reseeded[n_lab:]

  def _size_bounds(self, data, num_unlabeled: int):
    """(low, high) rows per class from `propagate.size_bounds` times the
    class sizes the labeled set (or data.class_prior) implies; None: off."""
    bounds = tuple(self.config.propagate.get("size_bounds", ()))
    if not bounds:
      return None
    expected = num_unlabeled * self._expected_shares(data)
    return bounds[0] * expected, bounds[1] * expected

  def _expected_shares(self, data):
    return shares.expected_shares(np.asarray(data.labeled_labels), self.ctx.num_classes,
                                  tuple(self.config.data.get("class_prior", ())))

  def record(self):
    return dict(self._record)

  def init_state(self, num_unlabeled):
    return self.rule.init_state(num_unlabeled) if self.rule else None

  def vote(self, images):
    if not self.vote_k:
      return None
    if self._memory is None:
      raise RuntimeError("propagate: vote() before prepare() built the graph")
    embedding, features, labels = self._memory
    return graph.knn_vote(embedding(np.asarray(images)), features, labels, k=self.vote_k,
                          num_classes=self.ctx.num_classes)

  def views(self, rng, labeled_images, unlabeled_images):
    k_lab, k_unl = jax.random.split(rng)
    out = {"labeled": self.labeled_augment(k_lab, labeled_images),
           "strong (pseudo-labeled)": self.strong(k_unl, unlabeled_images)}
    if self.consistency:
      out["weak (same images)"] = self.weak(jax.random.fold_in(rng, 2), unlabeled_images)
    return out

  @property
  def images_per_step(self):
    views = 2 if self.consistency else 1
    return self.labeled_batch_size + views * self.unlabeled_batch_size

  def loss(self, params, *, forward, labeled, unlabeled, rng, step, state):
    cfg = self.config.propagate
    k_lab, k_unl = jax.random.split(rng)
    n_lab, n_unl = labeled.images.shape[0], unlabeled.images.shape[0]
    views = [self.labeled_augment(k_lab, labeled.images), self.strong(k_unl, unlabeled.images)]
    if self.consistency:
      # A key of its own, so that runs without the term draw exactly what
      # they drew before it existed (the measured tables stay reproducible).
      views.append(self.weak(jax.random.fold_in(rng, 2), unlabeled.images))
    logits, batch_stats = forward(params, jnp.concatenate(views))
    logits_strong = logits[n_lab:n_lab + n_unl]
    supervised = losses.cross_entropy(logits[:n_lab], labeled.labels,
                                      label_smoothing=self.config.label_smoothing)
    per_example = losses.cross_entropy(logits_strong, unlabeled.pseudo_labels,
                                       label_smoothing=self.config.label_smoothing,
                                       reduction="none")
    unsupervised = jnp.mean(per_example * unlabeled.pseudo_weights)
    total = supervised + cfg.lambda_u * unsupervised
    metrics = {
        "loss/supervised": supervised, "loss/pseudo_labels": unsupervised,
        "train/accuracy": losses.accuracy(logits[:n_lab], labeled.labels),
        # Agreement with the pseudo-labels, not accuracy: the true labels of
        # unlabeled images are never seen here.
        "train/pseudo_label_agreement": losses.accuracy(logits_strong,
                                                        unlabeled.pseudo_labels),
    }
    if self.consistency:
      consistency, guess, mask, rule_metrics, state = self.rule.unlabeled_term(
          logits[n_lab + n_unl:], logits_strong, labeled=labeled, unlabeled=unlabeled,
          state=state, step=step)
      total = total + self.consistency * consistency
      metrics.update({
          **rule_metrics, "loss/consistency": consistency, "mask_rate": mask.mean(),
          # How often the network, where confident, overrules the graph.
          "consistency/disagrees_with_graph": jnp.sum(
              mask * (guess != unlabeled.pseudo_labels)) / jnp.maximum(mask.sum(), 1.0)})
    return total, metrics, batch_stats, state


def _consistency_rule(config, ctx) -> FixMatch:
  """The FixMatch-family method whose `unlabeled_term` decides which of the
  network's weak-view predictions count, built on the propagate run's own
  views and batches: `threshold` is its tau, `mu` its unlabeled ratio."""
  cfg = config.propagate
  name = cfg.get("consistency_rule", "fixmatch")
  family = [n for n in METHODS if issubclass(METHODS.get(n), FixMatch)]
  if name not in family:
    raise ConfigError(f"propagate.consistency_rule={name!r} must be a FixMatch-family "
                      f"method: {', '.join(family)}")
  cls = METHODS.get(name)
  rule = ml_collections.ConfigDict(config.to_dict())
  rule.method = name
  rule.fixmatch = dict(mu=cfg.mu, threshold=cfg.threshold, lambda_u=1.0, rampup_steps=0,
                       align=False, align_batches=1, weak_pass="joint")
  if name != "fixmatch":
    rule[name] = dict(config.get(name) or cls.OPTIONS)
  return cls(rule, ctx)
