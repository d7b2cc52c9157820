import jax.numpy as jnp
import numpy as np
import pytest

from mnist_ten import neighbors


def test_knn_predicts_the_nearest_labeled_example():
  train_x = jnp.asarray([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
  train_y = jnp.asarray([0, 1, 2])
  query = jnp.asarray([[1.0, 1.0], [9.0, 1.0], [1.0, 8.0], [6.0, 0.0]])
  pred = neighbors.knn_predict(train_x, train_y, query, k=1, num_classes=3)
  np.testing.assert_array_equal(pred, [0, 1, 2, 1])


def test_knn_majority_vote():
  train_x = jnp.asarray([[0.0], [1.0], [1.5], [10.0]])
  train_y = jnp.asarray([0, 1, 1, 0])
  # Nearest is class 0, but 2 of the 3 nearest are class 1.
  pred = neighbors.knn_predict(train_x, train_y, jnp.asarray([[0.4]]), k=3, num_classes=2)
  assert int(pred[0]) == 1


def _fixmatch(threshold, preset=None, **fixmatch_options):
  from configs import fixmatch as fixmatch_config
  from mnist_ten import methods
  config = fixmatch_config.get_config(preset)
  config.batch_size, config.fixmatch.mu, config.fixmatch.threshold = 4, 2, threshold
  config.fixmatch.update(fixmatch_options)
  return methods.build(config, methods.Context(num_classes=3, hflip_allowed=False))


def _batches():
  import jax
  from mnist_ten.input_pipeline import Batch
  images = jax.random.uniform(jax.random.key(0), (12, 28, 28, 1))
  return Batch(images[:4], jnp.asarray([0, 1, 2, 0])), Batch(images[4:])


def test_fixmatch_batch_shapes_and_mask():
  import jax
  seen = []

  def forward(params, images, train=True, output="logits"):
    seen.append(images.shape)
    # Confident class 1 on every image: the weak view's pseudo-label is 1.
    return jnp.tile(jnp.asarray([[0.0, params, 0.0]]), (images.shape[0], 1)), {}

  labeled, unlabeled = _batches()
  method = _fixmatch(threshold=0.95)
  assert method.images_per_step == 4 + 2 * 8
  loss, metrics, _, _ = method.loss(jnp.float32(10.0), forward=forward, labeled=labeled,
                                    unlabeled=unlabeled, rng=jax.random.key(1), step=0, state=None)
  assert seen == [(20, 28, 28, 1)]  # one forward pass over labeled + weak + strong
  assert float(metrics["mask_rate"]) == 1.0
  assert float(metrics["loss/unsupervised"]) < 1e-3
  _, metrics, _, _ = _fixmatch(threshold=1.01).loss(
      jnp.float32(10.0), forward=forward, labeled=labeled, unlabeled=unlabeled,
      rng=jax.random.key(1), step=0, state=None)
  assert float(metrics["mask_rate"]) == 0.0 and float(metrics["loss/unsupervised"]) == 0.0


def _lenet(batch_norm=True, kernel_grad="auto"):
  """A LeNet for 3 classes, its variables, and the labeled and unlabeled batches."""
  import jax
  from mnist_ten import config as config_lib
  from mnist_ten import models
  model = models.build(config_lib.model_config("lenet", batch_norm=batch_norm,
                                               kernel_grad=kernel_grad), 3)
  labeled, unlabeled = _batches()
  return model, model.init(jax.random.key(0), labeled.images), labeled, unlabeled


def _fixmatch_loss_fn(method, model, variables, labeled, unlabeled):
  """params -> (loss, (metrics, new batch stats)) of one FixMatch step."""
  import jax
  from mnist_ten import train

  def loss_fn(params):
    loss, metrics, stats, _ = method.loss(
        params, forward=train.make_forward(model, variables.get("batch_stats", {})),
        labeled=labeled, unlabeled=unlabeled, rng=jax.random.key(1), step=0, state=None)
    return loss, (metrics, stats)
  return loss_fn


def _lenet_fixmatch_runs(batch_norm, weak_passes):
  import jax
  model, variables, labeled, unlabeled = _lenet(batch_norm)
  runs = {}
  for weak_pass in weak_passes:
    method = _fixmatch(threshold=0.4, weak_pass=weak_pass)
    loss_fn = _fixmatch_loss_fn(method, model, variables, labeled, unlabeled)
    runs[weak_pass] = method, jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
  return model, variables, labeled, unlabeled, runs


@pytest.mark.parametrize("batch_norm", [False, True])
def test_fixmatch_weak_passes(batch_norm):
  """weak_pass: no_grad keeps the joint forward pass (same loss, same
  statistics) and drops only the weak rows' gradient through the batch
  statistics; separate runs the weak view in a pass of its own. Without
  batch norm all three give the joint pass's loss and gradient (the weak
  logits carry no gradient in any of them); with it, separate's running
  statistics are the image-weighted mean of the two passes' updates."""
  import jax
  model, variables, labeled, unlabeled, runs = _lenet_fixmatch_runs(
      batch_norm, ("joint", "no_grad", "separate"))
  (loss_j, (metrics_j, stats_j)), grads_j = runs["joint"][1]
  (loss_n, (_, stats_n)), grads_n = runs["no_grad"][1]
  method, ((loss_s, (_, stats_s)), grads_s) = runs["separate"]
  assert float(metrics_j["mask_rate"]) > 0  # the unlabeled term is in play
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(loss_n, loss_j, rtol=1e-5)
  jax.tree.map(close, stats_n, stats_j)
  if not batch_norm:
    np.testing.assert_allclose(loss_s, loss_j, rtol=1e-5)
    jax.tree.map(close, grads_s, grads_j)
    jax.tree.map(close, grads_n, grads_j)
    return
  # no_grad: the gradient differs from the joint pass's by the statistics term only.
  diff = max(float(jnp.abs(a - b).max() / jnp.abs(b).max())
             for a, b in zip(jax.tree.leaves(grads_n), jax.tree.leaves(grads_j)))
  assert 0 < diff < 0.5
  # separate: each pass normalises with its own statistics, so the losses differ,
  assert abs(float(loss_s) - float(loss_j)) > 1e-6
  # and the running statistics are the image-weighted mean of each pass's update.
  from mnist_ten import train
  k_lab, k_weak, k_strong = jax.random.split(jax.random.key(1), 3)
  forward = train.make_forward(model, variables["batch_stats"])
  _, weak_stats = forward(variables["params"], method.weak(k_weak, unlabeled.images))
  _, other_stats = forward(variables["params"], jnp.concatenate(
      [method.labeled_augment(k_lab, labeled.images), method.strong(k_strong, unlabeled.images)]))
  expected = jax.tree.map(lambda w, o: 8 / 20 * w + 12 / 20 * o, weak_stats, other_stats)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               stats_s, expected)


@pytest.mark.parametrize("weak_pass, weak_rows_backward", [("joint", True), ("no_grad", False)])
def test_fixmatch_no_grad_weak_pass_builds_no_backward_for_the_weak_rows(weak_pass,
                                                                          weak_rows_backward):
  """The point of no_grad: in the compiled gradient, the convolutions over the
  8 weak rows are the forward pass's 2 only, and none spans the whole batch."""
  import re
  import jax
  model, variables, labeled, unlabeled = _lenet(kernel_grad="xla")
  loss_fn = _fixmatch_loss_fn(_fixmatch(threshold=0.4, weak_pass=weak_pass), model, variables,
                              labeled, unlabeled)
  text = jax.jit(jax.grad(loss_fn, has_aux=True)).lower(variables["params"]).as_text()
  batches = [int(b) for b in re.findall(r"stablehlo.convolution.*?: \(tensor<(\d+)x", text)]
  # 2 forward + 3 backward convolutions (+ 2 forward over the weak rows)
  assert len(batches) == (5 if weak_rows_backward else 7)
  if weak_rows_backward:
    assert batches == [20] * 5
  else:
    assert sorted(batches) == [8, 8] + [12] * 5


def test_fixmatch_weak_pass_must_be_known():
  from mnist_ten.errors import ConfigError
  with pytest.raises(ConfigError, match="weak_pass"):
    _fixmatch(0.95, weak_pass="both")


def test_fixmatch_align_spreads_one_class_pseudo_labels():
  """Every image leans to class 1, each with a runner-up (class 0 or 2 by
  position): unaligned, every confident pseudo-label is 1; aligned to the
  labeled classes, the runner-ups win and no class takes them all."""
  import jax

  def forward(params, images, train=True, output="logits"):
    runner_up = jax.nn.one_hot((jnp.arange(images.shape[0]) % 2) * 2, 3)
    return 4.0 * (jnp.asarray([0.0, 2.0, 0.0]) + 1.5 * runner_up), {}

  labeled, unlabeled = _batches()
  share = {}
  for preset in (None, "align"):
    method = _fixmatch(0.5, preset)
    assert method.config.fixmatch.align == (preset == "align")
    _, metrics, _, _ = method.loss(jnp.float32(0.0), forward=forward, labeled=labeled,
                                   unlabeled=unlabeled, rng=jax.random.key(0), step=0,
                                   state=method.init_state(8))
    assert float(metrics["mask_rate"]) > 0.4
    share[preset] = float(metrics["pseudo_label_top_class_share"])
  assert share[None] == 1.0 and share["align"] <= 0.5 + 1e-6


def _mixmatch(mixup, preset=None):
  from configs import mixmatch as mixmatch_config
  from mnist_ten import methods
  config = mixmatch_config.get_config(preset or ("" if mixup else "nomixup"))
  config.batch_size, config.mixmatch.mu = 4, 2
  return methods.build(config, methods.Context(num_classes=3, hflip_allowed=False))


@pytest.mark.parametrize("mixup", [True, False])
def test_mixmatch_guesses_sharpened_labels(mixup):
  import jax
  seen = []

  def forward(params, images, train=True, output="logits"):
    seen.append(images.shape[0])
    return jnp.tile(jnp.asarray([[0.0, params, 0.0]]), (images.shape[0], 1)), {}

  labeled, unlabeled = _batches()
  method = _mixmatch(mixup)
  loss, metrics, _, _ = method.loss(jnp.float32(1.0), forward=forward, labeled=labeled,
                                    unlabeled=unlabeled, rng=jax.random.key(0), step=10_000,
                                    state=None)
  assert seen == [2 * 8, 4 + 2 * 8]  # the guessing pass, then the training pass
  assert method.images_per_step == sum(seen)
  assert float(metrics["lambda_u"]) == 75.0  # ramped up fully
  # The guess sharpens the constant prediction softmax([0, 1, 0]) towards class 1.
  p = np.exp([0.0, 1.0, 0.0]) / np.exp([0.0, 1.0, 0.0]).sum()
  np.testing.assert_allclose(metrics["guess_confidence"], p[1], rtol=1e-5)
  assert np.isfinite(float(loss))


def test_mixmatch_align_spreads_one_class_guesses():
  """A model that calls every unlabeled image class 1: without alignment every
  guess says class 1; aligned to the labeled examples' classes, each image
  goes to its runner-up (class 0 or 2, half each)."""
  import jax
  labeled, unlabeled = _batches()

  def forward(params, images, train=True, output="logits"):
    # Class 1 everywhere; each image's runner-up is class (index mod 2) * 2.
    runner_up = jax.nn.one_hot((jnp.arange(images.shape[0]) % 2) * 2, 3)
    return jnp.asarray([0.0, 2.0, 0.0]) + 1.5 * runner_up, {}

  share = {}
  for preset in ("", "align"):
    method = _mixmatch(True, preset)
    assert method.config.mixmatch.align == (preset == "align")
    _, metrics, _, _ = method.loss(jnp.float32(0.0), forward=forward, labeled=labeled,
                                   unlabeled=unlabeled, rng=jax.random.key(0), step=0,
                                   state=method.init_state(8))
    share[preset] = float(metrics["guess_top_class_share"])
  assert share == {"": 1.0, "align": 0.5}


def test_pretext_transforms_are_eight_distinct_invertible_maps():
  from mnist_ten.methods import pretext
  image = jnp.arange(16.0).reshape(1, 4, 4, 1)
  outs = [pretext.transform(image, jnp.asarray([t]))[0] for t in range(8)]
  flat = {tuple(np.asarray(o).ravel()) for o in outs}
  assert len(flat) == 8
  np.testing.assert_array_equal(outs[0], image[0])
  np.testing.assert_array_equal(outs[1], jnp.rot90(image[0], 1, axes=(0, 1)))
  np.testing.assert_array_equal(outs[4], image[0, :, ::-1])


def test_propagate_prepares_pseudo_labels_from_images_and_labeled_examples(toy_config):
  """The toy classes are bars at class-specific rows: the graph over deskewed
  pixels recovers them from one labeled image per class, and the loss uses
  the pseudo-labels with their weights."""
  import jax
  from mnist_ten import datasets, input_pipeline, methods, parallel, splits
  shard = parallel.batch_sharded(parallel.make_mesh())
  config = toy_config
  config.method = "propagate"
  config.augment.strong = "affine(shift=0.05)"
  config.propagate = dict(features="pixels(dim=32)", k=5, iterations=200, keep=0.5, mu=2,
                          lambda_u=1.0, agree_with_init=False)
  dataset = datasets.load(config.data)
  split = splits.make_split(dataset.train_labels, 10, labels_per_class=1, label_seed=0)
  data = input_pipeline.host_train_data(dataset, split)
  method = methods.build(config, methods.Context(num_classes=10, hflip_allowed=False,
                                                 image_shape=dataset.image_shape))
  prepared = method.prepare(data)
  truth = dataset.train_labels[split.unlabeled]
  pseudo = np.asarray(prepared.pseudo_labels)
  assert (pseudo == truth).mean() > 0.9
  weights = np.asarray(prepared.pseudo_weights)
  assert set(np.unique(weights)) == {0.0, 1.0} and abs(weights.mean() - 0.5) < 0.05
  # Same images and labeled examples, different (scrambled) hidden labels:
  # the pseudo-labels cannot change, they never see them.
  again = method.prepare(input_pipeline.host_train_data(dataset, split))
  np.testing.assert_array_equal(np.asarray(again.pseudo_labels), pseudo)

  labeled, unlabeled = input_pipeline.sample(input_pipeline.to_device(prepared, None),
                                             jax.random.key(0), labeled_size=4,
                                             unlabeled_size=8, sharding=shard)
  np.testing.assert_array_equal(unlabeled.pseudo_labels.shape, (8,))

  def forward(params, images, train=True, output="logits"):
    return jnp.zeros((images.shape[0], 10)) + params, {}
  _, metrics, _, _ = method.loss(jnp.zeros(10), forward=forward, labeled=labeled,
                                 unlabeled=unlabeled, rng=jax.random.key(1), step=0, state=None)
  # Uniform logits: cross-entropy log(10) on every kept example, 0 on the rest.
  expected = np.log(10) * float(unlabeled.pseudo_weights.mean())
  np.testing.assert_allclose(float(metrics["loss/pseudo_labels"]), expected, rtol=1e-5)


def test_propagate_refuses_encoder_features_without_init_from(toy_config):
  from mnist_ten import methods
  from mnist_ten.errors import ConfigError
  toy_config.method = "propagate"
  toy_config.augment.strong = "none"
  toy_config.propagate = dict(features="encoder(dim=8)", k=5, iterations=10, keep=1.0,
                              mu=1, lambda_u=1.0, agree_with_init=False)
  with pytest.raises(ConfigError, match="init_from"):
    methods.build(toy_config, methods.Context(num_classes=10, hflip_allowed=False))


def test_propagate_vote_adds_the_graph_labels_of_the_nearest_training_images(toy_config):
  from mnist_ten import datasets, input_pipeline, methods, splits
  from mnist_ten.errors import ConfigError
  config = toy_config
  config.method = "propagate"
  config.augment.strong = "none"
  config.propagate = dict(features="pixels(dim=32)", k=5, iterations=200, keep=1.0, mu=2,
                          lambda_u=1.0, vote=5)
  ctx = methods.Context(num_classes=10, hflip_allowed=False, image_shape=(24, 24, 1))
  dataset = datasets.load(config.data)
  split = splits.make_split(dataset.train_labels, 10, labels_per_class=1, label_seed=0)
  method = methods.build(config, ctx)
  assert method.votes
  with pytest.raises(RuntimeError, match="before prepare"):
    method.vote(dataset.test_images)
  method.prepare(input_pipeline.host_train_data(dataset, split))
  votes = method.vote(dataset.test_images)
  assert votes.shape == (100, 10)
  np.testing.assert_allclose(votes.sum(1), 1.0, rtol=1e-5)
  # The toy graph labels the bars right, so the vote of the test images is right.
  assert np.mean(votes.argmax(1) == dataset.test_labels) > 0.9
  # Off by default (older configs have no `vote`), and checked.
  del config.propagate["vote"]
  assert methods.build(config, ctx).vote(dataset.test_images) is None
  config.propagate.vote = -1
  with pytest.raises(ConfigError, match="propagate.vote"):
    methods.build(config, ctx)
  config.propagate.vote = 5
  config.propagate.refine = 0.5  # a group would move with fewer edges to its new class
  with pytest.raises(ConfigError, match="propagate.refine=0.5"):
    methods.build(config, ctx)
  config.propagate.refine = 0.0


def test_entropy_minimisation_worked_example_lowers_unlabeled_entropy(toy_config, tmp_path):
  """The README's worked example, trained on the toy data: its own metric
  (prediction entropy on unlabeled images) falls, and it beats chance."""
  import json
  from mnist_ten import train
  config = toy_config
  config.method = "entropy_min"
  config.entropy_min = dict(mu=2, lambda_u=1.0, rampup_steps=0)
  config.num_steps, config.log_every, config.eval_every, config.checkpoint_every = 40, 10, 40, 40
  results = train.train_and_evaluate(config, tmp_path)
  logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  entropies = [m["entropy/unlabeled"] for m in logged if "entropy/unlabeled" in m]
  assert entropies[-1] < entropies[0] - 0.3
  assert results["test_accuracy_ema"] > 0.3


def test_default_rounds_chain_as_stages_each_adding_the_encoder():
  from configs import default as default_config
  from mnist_ten.errors import ConfigError
  config = default_config.get_config("rounds=3")
  rounds = [config, config.pretrain, config.pretrain.pretrain]
  assert not config.pretrain.pretrain.pretrain.get("method")  # exactly three
  assert [r.num_steps for r in rounds] == [default_config.LATER_STEPS] * 2 + [
      default_config.FIRST_STEPS]
  assert "encoder" not in rounds[2].propagate.features
  assert all(r.propagate.features.endswith("|encoder(dim=64)") and r.init_scope == "all"
             for r in rounds[:2])
  assert not default_config.get_config("rounds=1").pretrain.get("method")
  for bad in ("rounds=0", "rounds=two", "rounds=9"):
    with pytest.raises(ConfigError, match="rounds must be 1 to 5"):
      default_config.get_config(bad)


def test_propagate_consistency_term_uses_the_networks_confident_weak_view(toy_config):
  import jax
  from mnist_ten import input_pipeline, methods
  from mnist_ten.errors import ConfigError
  config = toy_config
  config.method = "propagate"
  config.augment.strong = "affine(shift=0.05)"
  config.propagate = dict(features="pixels(dim=8)", k=3, iterations=10, keep=1.0, mu=2,
                          lambda_u=1.0, agree_with_init=False, consistency=0.5,
                          threshold=0.9)
  ctx = methods.Context(num_classes=3, hflip_allowed=False)
  with pytest.raises(ConfigError, match="augment.weak"):
    methods.build(config, ctx)
  config.augment.weak = "affine(shift=0.05)"
  method = methods.build(config, ctx)
  assert method.images_per_step == 16 + 2 * 32  # labeled + strong and weak unlabeled views
  rng = np.random.default_rng(0)
  labeled = input_pipeline.Batch(jnp.asarray(rng.random((4, 8, 8, 1)), jnp.float32),
                                 jnp.asarray([0, 1, 2, 0]))
  pseudo = jnp.asarray([0, 0, 1, 2, 0, 1, 0, 0])
  unlabeled = input_pipeline.Batch(jnp.asarray(rng.random((8, 8, 8, 1)), jnp.float32),
                                   None, pseudo_labels=pseudo, pseudo_weights=jnp.ones(8))
  seen = []

  def forward(params, images, train=True, output="logits"):
    seen.append(images.shape[0])
    logits = jnp.zeros((images.shape[0], 3)).at[:, 0].set(params)  # sure of class 0
    return logits, {}
  loss, metrics, _, _ = method.loss(jnp.asarray(10.0), forward=forward, labeled=labeled,
                                    unlabeled=unlabeled, rng=jax.random.key(0), step=0, state=None)
  assert seen == [4 + 8 + 8]  # one forward pass over all three views
  assert float(metrics["mask_rate"]) == 1.0
  # Where sure, the network's guess (0) overrules the graph on 3 of 8 images.
  np.testing.assert_allclose(float(metrics["consistency/disagrees_with_graph"]), 3 / 8)
  np.testing.assert_allclose(float(metrics["loss/consistency"]),
                             float(-jax.nn.log_softmax(jnp.asarray([10.0, 0, 0]))[0]), rtol=1e-5)
  # Unsure (uniform logits): nothing passes the threshold, the term is zero.
  _, metrics, _, _ = method.loss(jnp.asarray(0.0), forward=forward, labeled=labeled,
                                 unlabeled=unlabeled, rng=jax.random.key(0), step=0, state=None)
  assert float(metrics["mask_rate"]) == 0.0 and float(metrics["loss/consistency"]) == 0.0


def test_pretext_alternate_trains_supervised_on_even_steps_and_pretext_on_odd(toy_config):
  import jax
  from mnist_ten import input_pipeline, methods
  toy_config.method = "pretext_alternate"
  method = methods.build(toy_config, methods.Context(num_classes=10, hflip_allowed=False,
                                                     image_shape=(8, 8, 1)))
  assert method.images_per_step == 2 * toy_config.batch_size  # both batches run every step
  rng = np.random.default_rng(0)
  labeled = input_pipeline.Batch(jnp.asarray(rng.random((4, 8, 8, 1)), jnp.float32),
                                 jnp.asarray([0, 1, 2, 3]))
  unlabeled = input_pipeline.Batch(jnp.asarray(rng.random((6, 8, 8, 1)), jnp.float32))

  def forward(params, images, train=True, output="logits"):
    # The main head scores class 0, the pretext head transform 0; each path
    # reports its own batch statistics.
    width = 8 if output == "aux" else 10
    logits = jnp.zeros((images.shape[0], width)).at[:, 0].set(params[output])
    return logits, {"seen": jnp.asarray(float(output == "aux"))}
  params = {"logits": jnp.asarray(1.0), "aux": jnp.asarray(2.0)}

  def run(step):
    return method.loss(params, forward=forward, labeled=labeled, unlabeled=unlabeled,
                       rng=jax.random.key(0), step=jnp.asarray(step), state=None)
  (loss0, m0, stats0, _), (loss1, m1, stats1, _) = run(0), run(1)
  assert float(stats0["seen"]) == 0.0 and float(stats1["seen"]) == 1.0
  np.testing.assert_allclose(float(loss0), float(m0["loss/supervised"]))
  np.testing.assert_allclose(float(loss1), float(m1["loss/pretext"]))
  assert np.isnan(float(m0["loss/pretext"])) and np.isnan(float(m1["loss/supervised"]))
  # Only the chosen loss has a gradient: even steps move the main head only.
  grad0 = jax.grad(lambda p: method.loss(p, forward=forward, labeled=labeled,
                                         unlabeled=unlabeled, rng=jax.random.key(0),
                                         step=jnp.asarray(0), state=None)[0])(params)
  grad1 = jax.grad(lambda p: method.loss(p, forward=forward, labeled=labeled,
                                         unlabeled=unlabeled, rng=jax.random.key(0),
                                         step=jnp.asarray(1), state=None)[0])(params)
  assert float(grad0["aux"]) == 0.0 and float(grad0["logits"]) != 0.0
  assert float(grad1["logits"]) == 0.0 and float(grad1["aux"]) != 0.0


def test_rotation_aux_adds_the_pretext_loss_to_any_method_and_keeps_its_own(toy_config):
  import jax
  from mnist_ten import input_pipeline, methods
  from mnist_ten.errors import ConfigError
  toy_config.method = "entropy_min"
  toy_config.entropy_min = dict(mu=2, lambda_u=1.0, rampup_steps=0)
  toy_config.rotation_aux.update(weight=0.5, images=3)
  ctx = methods.Context(num_classes=10, hflip_allowed=False, image_shape=(8, 8, 1))
  method = methods.build(toy_config, ctx)
  inner = method.inner
  assert method.aux_widths == (8,) and not inner.aux_widths
  assert method.images_per_step == inner.images_per_step + 3
  rng = np.random.default_rng(0)
  labeled = input_pipeline.Batch(jnp.asarray(rng.random((4, 8, 8, 1)), jnp.float32),
                                 jnp.asarray([0, 1, 2, 3]))
  unlabeled = input_pipeline.Batch(jnp.asarray(rng.random((8, 8, 8, 1)), jnp.float32))
  seen = []

  def forward(params, images, train=True, output="logits"):
    seen.append((output, images.shape[0]))
    width = 8 if output == "aux" else 10
    logits = jnp.zeros((images.shape[0], width)).at[:, 0].set(params[output])
    return logits, {"from": jnp.asarray(float(output == "aux"))}
  params = {"logits": jnp.asarray(1.0), "aux": jnp.asarray(2.0)}
  loss, metrics, stats, _ = method.loss(params, forward=forward, labeled=labeled,
                                        unlabeled=unlabeled, rng=jax.random.key(0), step=0,
                                        state=None)
  assert seen[-1] == ("aux", 3)  # the first 3 unlabeled images, rotated, to the aux head
  inner_loss = inner.loss(params, forward=forward, labeled=labeled, unlabeled=unlabeled,
                          rng=jax.random.split(jax.random.key(0))[0], step=0, state=None)[0]
  np.testing.assert_allclose(float(loss), float(inner_loss) + 0.5 * float(
      metrics["loss/rotation_aux"]), rtol=1e-6)
  # Transform 0 scores 2, the other 7 score 0: the cross-entropy of a uniform draw of them.
  assert 0.0 < float(metrics["loss/rotation_aux"]) < np.log(8) + 2
  assert float(stats["from"]) == 0.0  # the method's own batch statistics are kept
  toy_config.method = "rotation"
  with pytest.raises(ConfigError, match="auxiliary head of its own; 'rotation' has one"):
    methods.build(toy_config, ctx)
  toy_config.method = "supervised"
  with pytest.raises(ConfigError, match="method 'supervised' samples none"):
    methods.build(toy_config, ctx)


def test_rotation_aux_trains_end_to_end_and_loads_from_its_workdir(toy_config, tmp_path):
  import json
  import mnist_ten
  from mnist_ten import datasets, train
  toy_config.method = "entropy_min"
  toy_config.entropy_min = dict(mu=2, lambda_u=1.0, rampup_steps=0)
  toy_config.rotation_aux.weight = 1.0
  toy_config.num_steps, toy_config.log_every = 20, 10
  toy_config.eval_every = toy_config.checkpoint_every = 20
  results = train.train_and_evaluate(toy_config, tmp_path)
  logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  accuracy = [m["rotation_aux/accuracy"] for m in logged if "rotation_aux/accuracy" in m]
  losses = [m["loss/rotation_aux"] for m in logged if "loss/rotation_aux" in m]
  assert len(accuracy) == 2 and all(0.0 <= a <= 1.0 for a in accuracy)
  assert all(0.0 < v < 3 * np.log(8) for v in losses)  # the task's cross-entropy, finite
  assert "test_accuracy_ema" in results
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["rotation_aux"]["weight"] == 1.0
  # The saved run rebuilds with its auxiliary head and predicts.
  images = datasets.load(toy_config.data).test_images[:5]
  labels, probs = mnist_ten.load_classifier(tmp_path)(images)
  assert labels.shape == (5,) and np.allclose(probs.sum(1), 1.0, atol=1e-5)


@pytest.mark.parametrize("rule", ["flexmatch", "freematch", "softmatch"])
def test_propagate_consistency_rule_reuses_the_methods_rule_and_state(toy_config, rule):
  """The graph's targets plus an adaptive-threshold method's term: its state
  is the method's own, carried through propagate's loss."""
  import jax
  from mnist_ten import input_pipeline, methods
  from mnist_ten.errors import ConfigError
  from mnist_ten.methods import fixmatch
  config = toy_config
  config.method = "propagate"
  config.augment.strong = config.augment.weak = "affine(shift=0.05)"
  config.propagate = dict(features="pixels(dim=8)", k=3, iterations=10, keep=1.0, mu=2,
                          lambda_u=1.0, agree_with_init=False, consistency=0.5,
                          threshold=0.9, consistency_rule="mixmatch")
  ctx = methods.Context(num_classes=3, hflip_allowed=False)
  with pytest.raises(ConfigError, match="FixMatch-family"):
    methods.build(config, ctx)
  config.propagate.consistency_rule = rule
  method = methods.build(config, ctx)
  assert isinstance(method.rule, methods.METHODS.get(rule))
  assert method.rule.config.fixmatch.threshold == 0.9  # propagate's threshold is its tau
  assert dict(method.rule.config[rule]) == methods.METHODS.get(rule).OPTIONS
  state = method.init_state(8)
  assert jax.tree.structure(state) == jax.tree.structure(method.rule.init_state(8))
  rng = np.random.default_rng(0)
  labeled = input_pipeline.Batch(jnp.asarray(rng.random((4, 8, 8, 1)), jnp.float32),
                                 jnp.asarray([0, 1, 2, 0]))
  unlabeled = input_pipeline.Batch(jnp.asarray(rng.random((8, 8, 8, 1)), jnp.float32), None,
                                   pseudo_labels=jnp.zeros(8, jnp.int32),
                                   pseudo_weights=jnp.ones(8), indices=jnp.arange(8))

  def forward(params, images, train=True, output="logits"):
    return jnp.zeros((images.shape[0], 3)).at[:, 1].set(params), {}  # sure of class 1
  _, metrics, _, new_state = method.loss(jnp.asarray(10.0), forward=forward, labeled=labeled,
                                         unlabeled=unlabeled, rng=jax.random.key(0), step=0,
                                         state=state)
  # The rule's own term and state, as the method alone computes them.
  logits = jnp.zeros((8, 3)).at[:, 1].set(10.0)
  expected = method.rule.unlabeled_term(logits, logits, labeled=labeled, unlabeled=unlabeled,
                                        state=state, step=0)
  np.testing.assert_allclose(float(metrics["loss/consistency"]), float(expected[0]), rtol=1e-6)
  np.testing.assert_allclose(float(metrics["mask_rate"]), float(expected[2].mean()), rtol=1e-6)
  for got, want in zip(jax.tree.leaves(new_state), jax.tree.leaves(expected[4])):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  # The network overrules the graph (class 0) wherever the rule counts its guess.
  counted = float(expected[2].sum())
  assert float(metrics["consistency/disagrees_with_graph"]) == pytest.approx(
      counted / max(counted, 1.0))
  assert isinstance(method.rule, fixmatch.FixMatch)
