"""The generic trainer: `train_and_evaluate(config, workdir)`.

One pure, jit-compiled step (state, data) -> (state, metrics) samples the
batches on device, lets the method compute its loss, and applies the
optimizer and the EMA. The loop around it logs, evaluates, checkpoints, and
resumes from the workdir.
"""
import contextlib
import json
import logging as py_logging
import pathlib
import time
from typing import Any, Dict, List, Tuple

from absl import logging
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from mnist_ten import checkpoint
from mnist_ten import config as config_lib
from mnist_ten import datasets
from mnist_ten import evaluate
from mnist_ten import input_pipeline
from mnist_ten import methods
from mnist_ten import models
from mnist_ten import optim
from mnist_ten import parallel
from mnist_ten import splits
from mnist_ten.errors import ConfigError, TrainingError, WorkdirError
from mnist_ten.metric_writer import MetricWriter

# Config keys that may change between a run and its resumption: where the data
# is read from and how often to log do not change what is computed.
RESUME_MAY_CHANGE = ("data.data_dir", "data.idx_dir", "data.cache_dir",
                     "data.download", "log_every", "eval_every", "keep_checkpoints")


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  ema_params: Any
  rng: jax.Array  # raw uint32 key; the step's key is fold_in(rng, step)


def ema_decay_at(decay: float, step):
  # Warm-up as in tf.train.ExponentialMovingAverage(num_updates=step): without
  # it the random initialisation would still weigh e^-1 after 1/(1-decay) steps.
  return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def make_forward(model: models.Classifier, batch_stats):
  """forward(params, images, train, output) -> (outputs, new batch stats);
  output is "logits", "features", "aux" or "all" (a dict of the three)."""

  def forward(params, images, *, train: bool = True, output: str = "logits"):
    variables = {"params": params}
    if not batch_stats:
      return model.apply(variables, images, train=train, output=output), batch_stats
    variables["batch_stats"] = batch_stats
    if not train:
      return model.apply(variables, images, train=False, output=output), batch_stats
    out, updates = model.apply(variables, images, train=True, output=output,
                               mutable=["batch_stats"])
    return out, updates["batch_stats"]
  return forward


def make_train_step(model, method, tx, schedule, config, mesh):
  """The jit-compiled step, running `config.steps_per_dispatch` steps per call."""
  shard = parallel.batch_sharded(mesh)

  def one_step(state: TrainState, data: input_pipeline.TrainData):
    k_sample, k_loss = jax.random.split(jax.random.fold_in(state.rng, state.step))
    labeled, unlabeled = input_pipeline.sample(
        data, k_sample, labeled_size=method.labeled_batch_size,
        unlabeled_size=method.unlabeled_batch_size, sharding=shard)

    def loss_fn(params):
      loss, metrics, batch_stats = method.loss(
          params, forward=make_forward(model, state.batch_stats), labeled=labeled,
          unlabeled=unlabeled, rng=k_loss, step=state.step)
      return loss, (metrics, batch_stats)

    (loss, (metrics, batch_stats)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema_params = params
    if config.ema_decay:
      decay = ema_decay_at(config.ema_decay, state.step)
      ema_params = optax.incremental_update(params, state.ema_params, 1.0 - decay)
    metrics = {"loss": loss, **metrics, "lr": schedule(state.step),
               "grad_norm": optax.tree.norm(grads)}
    return state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                         opt_state=opt_state, ema_params=ema_params), metrics

  def step(state, data):
    if config.steps_per_dispatch == 1:
      return one_step(state, data)
    state, metrics = jax.lax.scan(lambda s, _: one_step(s, data), state,
                                  length=config.steps_per_dispatch)
    return state, jax.tree.map(lambda m: m.mean(0), metrics)

  return jax.jit(step, donate_argnums=0)


def init_state(model, tx, config, image_shape, mesh) -> TrainState:
  rng = jax.random.PRNGKey(config.seed)

  def make():
    variables = model.init(jax.random.fold_in(rng, -1 % 2**31),
                           jnp.zeros((2,) + tuple(image_shape)))
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}),
                      opt_state=tx.init(params), ema_params=params, rng=rng)
  # Made on the mesh directly: with several processes each one creates its
  # own devices' copies of the same values.
  state = jax.jit(make, out_shardings=parallel.replicated(mesh))()
  # A buffer of its own: the step donates its state, and one buffer cannot be
  # donated twice.
  return state.replace(ema_params=jax.tree.map(jnp.copy, state.params))


def load_init_from(state: TrainState, config) -> TrainState:
  """Copies the encoder (or every matching part) of another run's EMA weights."""
  source = pathlib.Path(config.init_from)
  ckpt_dir = source / "checkpoints"
  if not ckpt_dir.is_dir():
    raise WorkdirError(f"init_from={str(source)!r} holds no checkpoints/ folder")
  ckpt = checkpoint.Checkpointer(ckpt_dir, read_only=True)
  if ckpt.latest_step() is None:
    raise WorkdirError(f"init_from={str(source)!r} holds no complete checkpoint")
  raw = ckpt.restore_raw()
  ckpt.close()
  # The EMA weights are the other run's final model, when it kept them.
  src_params, src_stats = raw["ema_params"], raw.get("batch_stats") or {}
  # "encoder": the encoder alone; "all": every part (encoder, heads) both models have.
  parts = ["encoder"] if config.init_scope == "encoder" else [
      k for k in state.params if k in src_params]
  src_params = {**state.params, **{k: src_params.get(k) for k in parts}}
  src_stats = {**state.batch_stats, **{k: src_stats[k] for k in parts if k in src_stats}}
  try:
    params = flax.serialization.from_state_dict(state.params, src_params)
    stats = flax.serialization.from_state_dict(state.batch_stats, src_stats)
    mismatched = [jax.tree_util.keystr(path) for (path, a), b in zip(
        jax.tree_util.tree_flatten_with_path(state.params)[0], jax.tree.leaves(params))
                  if np.shape(a) != np.shape(b)]
  except (ValueError, KeyError, TypeError) as e:
    raise WorkdirError(f"init_from={str(source)!r}: its model does not match this "
                       f"config's ({e})") from None
  if mismatched:
    raise WorkdirError(f"init_from={str(source)!r}: parameter shapes differ at "
                       f"{mismatched[:3]}")
  params = jax.device_put(jax.tree.map(np.asarray, params),
                          jax.tree.map(lambda x: x.sharding, state.params))
  stats = jax.device_put(jax.tree.map(np.asarray, stats),
                         jax.tree.map(lambda x: x.sharding, state.batch_stats))
  # Separate buffers: the step donates its state, and one buffer cannot be donated twice.
  return state.replace(params=params, ema_params=jax.tree.map(jnp.copy, params),
                       batch_stats=stats)


def check_workdir(workdir: pathlib.Path, config):
  """Refuses a workdir that holds a run of a different config."""
  saved_path = workdir / "config.json"
  if not saved_path.exists():
    if (workdir / "checkpoints").exists():
      raise WorkdirError(f"workdir {str(workdir)!r} holds checkpoints but no "
                         "config.json; use another --workdir")
    return
  try:
    saved = json.loads(saved_path.read_text())
  except json.JSONDecodeError:
    raise WorkdirError(f"{saved_path} is not valid JSON; use another --workdir") from None
  diffs = config_lib.differences(saved, json.loads(config_lib.to_json(config)),
                                 ignore=RESUME_MAY_CHANGE)
  if diffs:
    raise WorkdirError(
        f"workdir {str(workdir)!r} holds a run of a different config "
        f"({'; '.join(diffs[:5])}{'; ...' if len(diffs) > 5 else ''}). "
        "Use another --workdir, or delete this one to start over.")


class OwnLogs(py_logging.Filter):
  """Keeps this project's log lines and any warning; drops libraries' INFO chatter
  (orbax logs every save step by step)."""

  def filter(self, record):
    return (record.levelno >= py_logging.WARNING or "mnist_ten" in record.pathname
            or record.pathname.endswith("launch.py"))


class _LogFile:
  """Copies this project's INFO lines into the workdir's log.txt whatever the
  console's verbosity (a notebook shows only warnings, the file keeps all)."""

  def __init__(self, path: pathlib.Path):
    self._handler = py_logging.FileHandler(path)
    self._handler.setFormatter(py_logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    self._handler.addFilter(OwnLogs())

  def __enter__(self):
    logger, console = logging.get_absl_logger(), logging.get_absl_handler()
    self._saved = (logger.level, console.level)
    console.setLevel(logger.getEffectiveLevel())  # the console keeps its verbosity
    logger.setLevel(min(logger.getEffectiveLevel(), py_logging.INFO))
    logger.addHandler(self._handler)

  def __exit__(self, *exc):
    logger, console = logging.get_absl_logger(), logging.get_absl_handler()
    logger.removeHandler(self._handler)
    self._handler.close()
    logger.setLevel(self._saved[0])
    console.setLevel(self._saved[1])


def _write_json(path: pathlib.Path, obj):
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_text(json.dumps(obj, indent=2, default=str))
  tmp.replace(path)  # atomic: readers never see half a file


def _window_means(pending) -> Dict[str, float]:
  """Means of each metric over the steps since the last log line. A method
  marks a metric it did not measure on a step as NaN (e.g. the supervised loss
  on a pretext step) and it is left out; the total loss never is, so a
  diverged run still shows NaN."""
  means = {}
  for key in pending[0]:
    values = np.array([float(m[key]) for m in pending])
    measured = values if key == "loss" else values[~np.isnan(values)]
    means[key] = float(measured.mean()) if measured.size else float("nan")
  return means


def _format_metrics(metrics: Dict[str, float]) -> str:
  return " ".join(f"{k}={v:.4g}" for k, v in metrics.items())


def _format_seconds(s: float) -> str:
  s = int(round(s))
  return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Setup:
  """Everything that is checked before anything is written to the workdir."""

  def __init__(self, config, dataset: datasets.Dataset = None):
    config_lib.validate(config)
    self.dataset = dataset or datasets.load(config.data)
    self.split = splits.make_split(
        self.dataset.train_labels, self.dataset.num_classes,
        labels_per_class=config.data.labels_per_class,
        label_seed=config.data.label_seed,
        labeled_indices=tuple(config.data.labeled_indices),
        validation_size=config.data.validation_size)
    self.mesh = parallel.make_mesh()
    ctx = methods.Context(num_classes=self.dataset.num_classes,
                          hflip_allowed=datasets.hflip_allowed(config.data),
                          image_shape=self.dataset.image_shape)
    self.method = methods.build(config, ctx)
    self.model = models.build(config.model, self.dataset.num_classes,
                              aux_widths=self.method.aux_widths,
                              frozen_encoder=config.freeze_encoder)
    if self.method.trains:
      for name, size in [("batch size", self.method.labeled_batch_size),
                         ("unlabeled batch size", self.method.unlabeled_batch_size),
                         ("eval_batch_size", config.eval_batch_size)]:
        parallel.check_divisible(name, size, self.mesh)
      if self.method.unlabeled_batch_size and not self.split.unlabeled.size:
        raise ConfigError(f"method {config.method!r} needs unlabeled images but every "
                          "train image is labeled or held out")


def pretrain_config(config) -> ml_collections.ConfigDict:
  """The stage before `config`: `config.pretrain`, on the same data, model and
  seed as `config` (whatever the nested copy says). It may have a `pretrain`
  of its own, so stages chain (e.g. rounds of self-training)."""
  stage = config.pretrain.copy_and_resolve_references()
  with stage.unlocked():
    stage.name = f"{config.name}/pretrain"
    stage.data = config.data.copy_and_resolve_references()
    stage.model = config.model.copy_and_resolve_references()
    stage.seed = config.seed
    if "pretrain" not in stage:
      stage.pretrain = ml_collections.ConfigDict()
  return stage


def stages(config, workdir) -> List[Tuple[ml_collections.ConfigDict, pathlib.Path]]:
  """(config, workdir) of every stage, first to run first. With
  `config.pretrain.method` set, the stage before runs in `workdir/pretrain`
  and `config` starts from its weights; an explicit `config.init_from` reuses
  a finished earlier stage instead (and ends the chain there)."""
  chain = []
  workdir = pathlib.Path(workdir)
  while config.pretrain.get("method") and not config.init_from:
    before = pretrain_config(config)
    config = config.copy_and_resolve_references()
    with config.unlocked():
      config.init_from = str(workdir / "pretrain")
    chain.append((config, workdir))
    config, workdir = before, workdir / "pretrain"
  chain.append((config, workdir))
  return chain[::-1]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir) -> Dict:
  """Trains (or resumes) the run in `workdir` and returns its results dict.

  A config with `pretrain` set runs its earlier stages first (see `stages`),
  each resumable in its own workdir.
  """
  start_time = time.time()
  chain = stages(config, workdir)
  # Every stage is checked before any trains; they share config.data
  # (pretrain_config forces it), so one load serves them all.
  setups = []
  for stage, stage_dir in chain:
    setups.append(Setup(stage, setups[0].dataset if setups else None))
    check_workdir(stage_dir, stage)
  for i, ((stage, stage_dir), setup) in enumerate(zip(chain, setups)):
    if len(chain) > 1:
      logging.info("stage %d/%d: %s in %s%s", i + 1, len(chain), stage.method, stage_dir,
                   f", from the previous stage's {stage.init_scope}" if i else "")
    results = _run_stage(stage, stage_dir, setup, start_time if i == len(chain) - 1
                         else time.time())
  return results


def _run_stage(config, workdir: pathlib.Path, setup: Setup, start_time: float) -> Dict:
  """One checked stage: writes its config and split, trains or evaluates."""
  is_main = parallel.is_main()
  dataset, split, method = setup.dataset, setup.split, setup.method
  if is_main:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(config_lib.to_json(config))
    _write_json(workdir / "split.json", {
        "dataset": dataset.name, "num_classes": dataset.num_classes,
        "image_shape": list(dataset.image_shape), **split.to_json()})
  with _LogFile(workdir / "log.txt") if is_main else contextlib.nullcontext():
    logging.info("run %r: method %s, %s, %s with %d labeled / %d unlabeled train "
                 "images, %d devices (%s)", config.name, config.method,
                 f"model {config.model.name}" if method.trains else "no training",
                 dataset.name, split.labeled.size, split.unlabeled.size, setup.mesh.size,
                 jax.devices()[0].device_kind)
    if split.validation.size:
      logging.info("holding out %d train images as a validation set: their labels are "
                   "used for monitoring only, never for training", split.validation.size)
    if not method.trains:
      return _evaluate_nonparametric(config, workdir, setup, is_main)
    return _train(config, workdir, setup, is_main, start_time)


def _train(config, workdir, setup, is_main, start_time) -> Dict:
  dataset, split, mesh, model, method = (setup.dataset, setup.split, setup.mesh,
                                         setup.model, setup.method)
  tx, schedule = optim.make(config.optim, config.num_steps,
                            frozen_encoder=config.freeze_encoder)
  state = init_state(model, tx, config, dataset.image_shape, mesh)
  # Every process takes part in saving (Orbax coordinates them: process 0
  # writes the metadata, one copy of each replicated array is written).
  ckpt = checkpoint.Checkpointer(workdir / "checkpoints", keep=config.keep_checkpoints)
  # Times accumulate over sittings: a resumed run reports its whole cost.
  train_seconds, earlier_wall_seconds = 0.0, 0.0
  if ckpt.latest_step() is not None:
    state, extra = ckpt.restore(state)
    state = parallel.put_replicated(state, mesh)
    train_seconds = float(extra.get("train_seconds", 0.0))
    earlier_wall_seconds = float(extra.get("wall_seconds", 0.0))
    logging.info("resumed from step %d of %s", int(state.step), workdir / "checkpoints")
  elif config.init_from:
    state = load_init_from(state, config)
    logging.info("initialised %s from %s", config.init_scope, config.init_from)

  t = time.time()
  data = method.prepare(input_pipeline.host_train_data(dataset, split))
  prepare_seconds = time.time() - t
  if data.pseudo_labels is not None:
    logging.info("prepared pseudo-labels for %d unlabeled images in %s (%.0f%% weighted)",
                 data.pseudo_labels.shape[0], _format_seconds(prepare_seconds),
                 100 * float(np.mean(data.pseudo_weights > 0)))
  data = input_pipeline.to_device(data, mesh)
  eval_sets = input_pipeline.make_eval_sets(dataset, split, mesh)
  # What the method adds to the network's probabilities at prediction (e.g. a
  # graph's vote): fixed for the run, so computed once, with `prepare`.
  t = time.time()
  votes = {s.name: method.vote(s.host_images) for s in eval_sets}
  votes = {name: v for name, v in votes.items() if v is not None}
  if votes:
    prepare_seconds += time.time() - t
    for eval_set in eval_sets:
      if eval_set.name in votes:
        logging.info("the method votes with the network (%s); its vote alone is right on "
                     "%.2f%% of the %s images", _format_seconds(time.time() - t), 100 * np.mean(
                         votes[eval_set.name].argmax(1) == eval_set.labels), eval_set.name)
  if config.eval_with == "head":
    predict = evaluate.make_predict(lambda v, x: jax.nn.softmax(model.apply(v, x, train=False)),
                                    config.eval_batch_size, parallel.batch_sharded(mesh),
                                    argmax=False)
  else:  # "knn": nearest labeled example in the encoder's feature space
    predict = evaluate.make_knn_predict(
        lambda v, x: model.apply(v, x, train=False, output="features"),
        data.labeled_images, data.labeled_labels, dataset.num_classes,
        config.eval_batch_size, parallel.batch_sharded(mesh))
  train_step = make_train_step(model, method, tx, schedule, config, mesh)
  writer = MetricWriter(workdir, enabled=is_main)

  def run_eval(step) -> Dict[str, Dict]:
    eval_start = time.time()
    out = {}
    for eval_set in eval_sets:
      vote = votes.get(eval_set.name)
      for tag, params in [("ema", state.ema_params), ("raw", state.params)]:
        variables = {"params": params}
        if state.batch_stats:
          variables["batch_stats"] = state.batch_stats
        outputs = predict(variables, eval_set.images)
        if outputs.ndim == 2:  # probabilities (eval_with="head")
          if vote is not None and tag == "ema":
            # The network alone too ("net"), to see what the vote adds.
            out[f"{eval_set.name}_net"] = evaluate.classification_metrics(
                eval_set.labels, outputs.argmax(-1), dataset.num_classes)
          outputs = (outputs if vote is None else outputs + vote).argmax(-1)
        out[f"{eval_set.name}_{tag}"] = evaluate.classification_metrics(
            eval_set.labels, outputs, dataset.num_classes)
    scalars = {}
    for key, metrics in out.items():
      split_name, tag = key.split("_")
      scalars[f"{split_name}/accuracy_{tag}"] = metrics["accuracy"]
      scalars[f"{split_name}/macro_f1_{tag}"] = metrics["macro_f1"]
    writer.write_scalars(step, scalars)
    logging.info("eval step %d: %s", step, _format_metrics(scalars))
    logging.info("eval step %d: per-class test accuracy (EMA) %s", step, " ".join(
        f"{c}:{a:.3f}" for c, a in enumerate(out["test_ema"]["per_class_accuracy"])))
    if is_main:  # the full record, confusion matrices included
      with open(workdir / "evals.jsonl", "a") as f:
        # The clock time, for time-to-accuracy measurements across stages,
        # and what the evaluation itself took, which they leave out.
        f.write(json.dumps({"step": step, "time": round(time.time(), 3),
                            "eval_seconds": round(time.time() - eval_start, 3), **out}) + "\n")
    return out

  try:
    step = int(state.step)
    pending, window_start, window_steps = [], time.time(), 0
    compile_seconds = 0.0
    while step < config.num_steps:
      t = time.time()
      state, metrics = train_step(state, data)
      step += config.steps_per_dispatch
      if not compile_seconds:
        jax.block_until_ready(state)  # the first call compiles: keep it out of images/s
        compile_seconds = time.time() - t
        window_start = time.time()
      else:
        window_steps += config.steps_per_dispatch
      pending.append(metrics)
      last = step >= config.num_steps
      if step % config.log_every == 0 or step % config.checkpoint_every == 0 or last:
        # Fetching the metrics syncs with the device; it also guarantees no NaN
        # state is ever checkpointed.
        means = _window_means(pending)
        pending = []
        if not np.isfinite(means["loss"]):
          raise TrainingError(
              f"loss became {means['loss']} by step {step}; stopped without saving, the "
              f"checkpoints in {workdir / 'checkpoints'} are untouched (last: step "
              f"{ckpt.latest_step()}). Lower optim.lr or check the data.")
        elapsed = time.time() - window_start
        rate = window_steps * method.images_per_step / elapsed if window_steps else 0.0
        train_seconds += elapsed
        window_start, window_steps = time.time(), 0
        remaining = (config.num_steps - step) * method.images_per_step / rate if rate else 0
        writer.write_scalars(step, {**means, "images_per_second": rate})
        logging.info("step %d/%d (%d%%) %s | %.0f img/s | ETA %s", step, config.num_steps,
                     100 * step // config.num_steps, _format_metrics(means), rate,
                     _format_seconds(remaining))
      if step % config.eval_every == 0 and not last:
        run_eval(step)
        window_start = time.time()  # evaluation time is not training time
      if step % config.checkpoint_every == 0 or last:
        ckpt.save(step, state, train_seconds=np.float64(train_seconds),
                  wall_seconds=np.float64(earlier_wall_seconds + time.time() - start_time))
  finally:
    # Waits for an async save in flight, also when training stops on an error,
    # so that no checkpoint is left half-written by this process.
    ckpt.wait()
    ckpt.close()

  final = run_eval(step)
  images_per_second = (config.num_steps * method.images_per_step / train_seconds
                       if train_seconds else 0.0)
  results = _results(config, setup, final["test_ema"], final["test_raw"], {
      "steps": step, "train_seconds": train_seconds, "compile_seconds": compile_seconds,
      "prepare_seconds": prepare_seconds,
      "wall_seconds": earlier_wall_seconds + time.time() - start_time,
      "images_per_second": images_per_second})
  if "val_ema" in final:
    results["val_accuracy_ema"] = final["val_ema"]["accuracy"]
  if "test_net" in final:  # the EMA network without the method's vote
    results["test_accuracy_network_ema"] = final["test_net"]["accuracy"]
  if is_main:
    _write_json(workdir / "results.json", results)
  writer.close()
  logging.info("done: test accuracy %.4f (EMA), %.4f (raw) after %d steps, %s of "
               "training, %.0f img/s", results["test_accuracy_ema"],
               results["test_accuracy_raw"], step, _format_seconds(train_seconds),
               images_per_second)
  return results


def _results(config, setup, ema: Dict, raw: Dict, timing: Dict) -> Dict:
  """The results.json record of a finished run."""
  labeled = setup.split.labeled
  return {
      "config": config.name, "method": config.method, "model": config.model.name,
      "dataset": setup.dataset.name, "label_seed": config.data.label_seed,
      "labels_per_class": config.data.labels_per_class,
      "labeled_indices": labeled.tolist() if labeled.size <= 1000 else
      f"{labeled.size} indices, see split.json",
      "test_accuracy_ema": ema["accuracy"], "test_accuracy_raw": raw["accuracy"],
      "test_macro_f1_ema": ema["macro_f1"], "test_macro_f1_raw": raw["macro_f1"],
      "test_per_class_accuracy_ema": ema["per_class_accuracy"],
      "test_confusion_ema": ema["confusion"], **timing,
      "device_kind": jax.devices()[0].device_kind, "num_devices": setup.mesh.size,
      "jax_version": jax.__version__,
  }


def _evaluate_nonparametric(config, workdir, setup, is_main) -> Dict:
  """Baselines with no training (nearest neighbour): evaluate and report."""
  dataset, split, method = setup.dataset, setup.split, setup.method
  t = time.time()
  labeled_images = jnp.asarray(dataset.train_images[split.labeled])
  labeled_labels = jnp.asarray(dataset.train_labels[split.labeled])
  predictions = np.concatenate([
      np.asarray(method.predict(labeled_images, labeled_labels,
                                jnp.asarray(dataset.test_images[i:i + config.eval_batch_size])))
      for i in range(0, dataset.test_images.shape[0], config.eval_batch_size)])
  metrics = evaluate.classification_metrics(dataset.test_labels, predictions,
                                            dataset.num_classes)
  results = _results(config, setup, metrics, metrics, {
      "steps": 0, "train_seconds": time.time() - t, "wall_seconds": time.time() - t,
      "images_per_second": 0.0})
  if is_main:
    _write_json(workdir / "results.json", results)
  logging.info("%s: test accuracy %.4f, macro-F1 %.4f", config.method,
               metrics["accuracy"], metrics["macro_f1"])
  return results
