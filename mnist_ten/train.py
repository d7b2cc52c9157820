"""The generic trainer: `train_and_evaluate(config, workdir)`.

One pure, jit-compiled step (state, data) -> (state, metrics) samples the
batches on device, lets the method compute its loss, and applies the
optimizer and the EMA. `_train` composes the pieces around it: restore or
initialise, prepare the method's data, build the evaluators, the step loop
with its clock, logging, checkpoints, the results and the plots.
"""
import contextlib
import dataclasses
import functools
import json
import logging as py_logging
import pathlib
import re
import subprocess
import time
from typing import Any, Callable, Dict, List, Tuple

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
from mnist_ten import errors
from mnist_ten import evaluate
from mnist_ten import inference
from mnist_ten import input_pipeline
from mnist_ten import models
from mnist_ten import optim
from mnist_ten import parallel
from mnist_ten import phases as phases_lib
from mnist_ten import plots
from mnist_ten import run as run_lib
from mnist_ten import shares as shares_lib
from mnist_ten import tf_pipeline
from mnist_ten import workdir as workdir_lib
from mnist_ten.errors import ConfigError, DiskError, TrainingError, WorkdirError
from mnist_ten.metric_writer import MetricWriter

# Config keys that may change between a run and its resumption: where the data
# is read from and how often to log do not change what is computed.
RESUME_MAY_CHANGE = ("data.data_dir", "data.idx_dir", "data.cache_dir", "data.dir",
                     "data.download", "log_every", "eval_every", "keep_checkpoints",
                     "eval_with", "reevaluate", "share_warn", "compilation_cache",
                     *config_lib.EVAL_KEYS)


_PER_CLASS = re.compile(r"/c\d+$")
BAD_STEP = "first_nonfinite_step"  # a step's metrics: where training diverged
NO_BAD_STEP = np.iinfo(np.int32).max


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  ema_params: Any
  rng: jax.Array  # raw uint32 key; the step's key is fold_in(rng, step)
  method_state: Any = None  # the method's own pytree (Method.init_state), None for most

  def variables(self, tag: str = "ema") -> Dict[str, Any]:
    """The model's variables with the EMA ("ema") or the raw ("raw") weights."""
    params = self.ema_params if tag == "ema" else self.params
    return {"params": params, **({"batch_stats": self.batch_stats} if self.batch_stats else {})}


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


@dataclasses.dataclass(frozen=True)
class Step:
  """The compiled step and its learning-rate schedule's numbers, which it
  takes as an argument (optim.schedule_numbers): rounds that differ only in
  lr and steps compile one program, and the persistent cache serves the
  later ones."""
  compiled: Callable  # (state, inputs, numbers) -> (state, metrics)
  numbers: Dict[str, jax.Array]  # replicated on the mesh once

  def __call__(self, state, inputs):
    return self.compiled(state, inputs, self.numbers)

  def lower(self, state, inputs):
    return self.compiled.lower(state, inputs, self.numbers)


def make_train_step(model, method, config, mesh, fed: bool = False) -> Step:
  """The jit-compiled step, running `config.steps_per_dispatch` steps per call.

  step(state, data) samples its batches from `data` (`input_pipeline.TrainData`
  on the device); with `fed`, step(state, (labeled, unlabeled)) takes uint8
  batches from the tf.data pipeline instead ([steps_per_dispatch, B, ...]
  when it runs several steps a call)."""
  shard = parallel.batch_sharded(mesh)

  def update(state: TrainState, labeled, unlabeled, k_loss, numbers):
    tx, schedule = optim.for_config(config, numbers=numbers)

    def loss_fn(params):
      loss, metrics, batch_stats, method_state = method.loss(
          params, forward=make_forward(model, state.batch_stats), labeled=labeled,
          unlabeled=unlabeled, rng=k_loss, step=state.step, state=state.method_state)
      return loss, (metrics, batch_stats, method_state)

    (loss, (metrics, batch_stats, method_state)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema_params = params
    if config.ema_decay:
      decay = ema_decay_at(config.ema_decay, state.step)
      ema_params = optax.incremental_update(params, state.ema_params, 1.0 - decay)
    # One copy per device, as the weights: per-image rows are written by the
    # sharded batch's indices.
    method_state = jax.lax.with_sharding_constraint(method_state, parallel.replicated(mesh))
    grad_norm = optax.tree.norm(grads)
    metrics = {"loss": loss, **metrics, "lr": schedule(state.step), "grad_norm": grad_norm,
               # Checked on every step: the first step whose loss or gradient is
               # not finite (NO_BAD_STEP when none), kept by the scan's min.
               BAD_STEP: jnp.where(jnp.isfinite(loss) & jnp.isfinite(grad_norm),
                                   NO_BAD_STEP, state.step + 1)}
    return state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                         opt_state=opt_state, ema_params=ema_params,
                         method_state=method_state), metrics

  def keys(state):
    return jax.random.split(jax.random.fold_in(state.rng, state.step))

  def sampled_step(state: TrainState, data: input_pipeline.TrainData, numbers):
    k_sample, k_loss = keys(state)
    labeled, unlabeled = input_pipeline.sample(
        data, k_sample, labeled_size=method.labeled_batch_size,
        unlabeled_size=method.unlabeled_batch_size, sharding=shard)
    return update(state, labeled, unlabeled, k_loss, numbers)

  def fed_step(state: TrainState, batches, numbers):
    _, k_loss = keys(state)  # the same loss randomness as the sampled step's
    labeled, unlabeled = batches
    return update(state, tf_pipeline.to_float(labeled), tf_pipeline.to_float(unlabeled),
                  k_loss, numbers)

  one_step = fed_step if fed else sampled_step

  def step(state, inputs, numbers):
    if config.steps_per_dispatch == 1:
      return one_step(state, inputs, numbers)
    if fed:
      state, metrics = jax.lax.scan(lambda s, batches: one_step(s, batches, numbers), state,
                                    inputs)
    else:
      state, metrics = jax.lax.scan(lambda s, _: one_step(s, inputs, numbers), state,
                                    length=config.steps_per_dispatch)
    bad = metrics.pop(BAD_STEP).min()
    return state, {**jax.tree.map(lambda m: m.mean(0), metrics), BAD_STEP: bad}

  return Step(jax.jit(step, donate_argnums=0), parallel.put_replicated(
      optim.schedule_numbers(config.optim, config.num_steps), mesh))


def init_state(model, tx, config, image_shape, mesh, method_state=None) -> TrainState:
  """A fresh state on the mesh; `method_state`: the method's `init_state`."""
  rng = jax.random.PRNGKey(config.seed)

  def make():
    variables = model.init(jax.random.fold_in(rng, -1 % 2**31),
                           jnp.zeros((2,) + tuple(image_shape)))
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}),
                      opt_state=tx.init(params), ema_params=params, rng=rng,
                      method_state=method_state)
  # Made on the mesh directly: with several processes each one creates its
  # own devices' copies of the same values.
  state = jax.jit(make, out_shardings=parallel.replicated(mesh))()
  # A buffer of its own: the step donates its state, and one buffer cannot be
  # donated twice.
  return state.replace(ema_params=jax.tree.map(jnp.copy, state.params))


def load_init_from(state: TrainState, config) -> TrainState:
  """Copies the encoder (or every matching part) of another run's EMA weights."""
  source = pathlib.Path(config.init_from)
  try:
    src = run_lib.load_weights(source)
  except WorkdirError as e:
    raise WorkdirError(f"init_from: {e}") from None
  src_params, src_stats = src["params"], src.get("batch_stats") or {}
  if config.init_scope == "instance":
    # A bag model (model mil): the other run's encoder becomes its instance encoder.
    if "instance" not in state.params.get("encoder", {}):
      raise ConfigError("init_scope='instance' is for a bag model (model.name='mil'), "
                        f"not {config.model.name!r}; use 'encoder' or 'all'")
    # With model.instance_classes the instance encoder carries the other
    # run's head too (its class probabilities are the instance features).
    with_head = "head" in state.params["encoder"]["instance"]
    src_params = {"encoder": {**state.params["encoder"], "instance": (
        {"encoder": src_params["encoder"], "head": src_params["head"]} if with_head
        else src_params["encoder"])}}
    if "encoder" in src_stats:
      src_stats = {"encoder": {**state.batch_stats.get("encoder", {}), "instance": (
          {"encoder": src_stats["encoder"]} if with_head else src_stats["encoder"])}}
  # "encoder": the encoder alone; "all": every part (encoder, heads) both models have.
  parts = ["encoder"] if config.init_scope in ("encoder", "instance") else [
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


def check_init_from(init_from: str):
  """Refuses, before anything is written, an `init_from` that holds no
  finished checkpoint (as `load_init_from` would, later)."""
  try:
    run_lib.check_weights(init_from)
  except WorkdirError as e:
    raise WorkdirError(f"init_from: {e}") from None


def check_workdir(workdir: pathlib.Path, config):
  """Refuses a workdir that holds a run of a different config, or that is a file."""
  if workdir.exists() and not workdir.is_dir():
    raise WorkdirError(f"--workdir {str(workdir)!r} is a file, not a folder; name a folder "
                       "(a new one starts a run, an existing run's resumes it)")
  if not (workdir / "config.json").exists() and (workdir / "checkpoints").exists():
    raise WorkdirError(f"workdir {str(workdir)!r} holds checkpoints but no "
                       "config.json; use another --workdir")
  diffs = saved_differences(workdir, config)
  if diffs:
    raise WorkdirError(
        f"workdir {str(workdir)!r} holds a run of a different config ({diffs}). "
        "Use another --workdir, or delete this one to start over.")


def _resolved_by_training(config) -> tuple:
  """What a finished run's config.json holds that its command did not say:
  the inputs' statistics, steps and cadences from num_epochs, the indices
  read from a labeled_file."""
  keys = ("model.standardize",)
  if config.get("num_epochs"):
    keys += ("num_steps", "log_every", "eval_every", "checkpoint_every")
  if config.data.get("labeled_file"):
    keys += ("data.labeled_indices",)
  return keys


def saved_differences(workdir: pathlib.Path, config, finished: bool = False) -> str:
  """How the config saved in WORKDIR differs from `config` (up to five
  differences, '' when none or when nothing is saved). `finished`: `config`
  as a command gives it, before training resolves some keys; a key that a
  section of the saved config lacks, added to the code since, is no
  difference either."""
  saved_path = workdir / "config.json"
  if not saved_path.exists():
    return ""
  try:
    # With the keys added since it was written at their defaults.
    saved = config_lib.from_saved(json.loads(saved_path.read_text())).to_dict()
  except json.JSONDecodeError:
    raise WorkdirError(f"{saved_path} is not valid JSON; use another folder") from None
  ignore = RESUME_MAY_CHANGE
  if finished:
    ignore += _resolved_by_training(config)
    # A chain started its later stage from the pretrain folder beside it (at
    # whatever path the folder had then): it trained that stage itself there.
    chained = config.pretrain.get("method") and not config.init_from
    if chained and (workdir / "pretrain" / "results.json").exists():
      saved["init_from"] = config.init_from
  diffs = config_lib.differences(saved, json.loads(config_lib.to_json(config)),
                                 ignore=ignore, newer_keys=finished)
  return "; ".join(diffs[:5]) + ("; ..." if len(diffs) > 5 else "")


class OwnLogs(py_logging.Filter):
  """Keeps this project's log lines and any warning; drops libraries' INFO chatter
  (orbax logs every save step by step)."""

  def filter(self, record):
    return (record.levelno >= py_logging.WARNING or "mnist_ten" in record.pathname
            or record.pathname.endswith("launch.py"))


class _QuietFileHandler(py_logging.FileHandler):
  """A log.txt that cannot be written (a full disk) costs its lines, not a
  traceback per line: the next checkpoint or metrics write reports the disk."""

  def handleError(self, record):
    pass


class _LogFile:
  """Copies this project's INFO lines into the workdir's log.txt whatever the
  console's verbosity (a notebook shows only warnings, the file keeps all)."""

  def __init__(self, path: pathlib.Path):
    self.start = path.stat().st_size if path.exists() else 0  # where this sitting's lines begin
    self._handler = _QuietFileHandler(path)
    self._handler.setFormatter(py_logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    self._handler.addFilter(OwnLogs())

  def __enter__(self):
    logger, console = logging.get_absl_logger(), logging.get_absl_handler()
    self._saved = (logger.level, console.level)
    console.setLevel(logger.getEffectiveLevel())  # the console keeps its verbosity
    logger.setLevel(min(logger.getEffectiveLevel(), py_logging.INFO))
    logger.addHandler(self._handler)
    return self

  def __exit__(self, *exc):
    logger, console = logging.get_absl_logger(), logging.get_absl_handler()
    logger.removeHandler(self._handler)
    self._handler.close()
    logger.setLevel(self._saved[0])
    console.setLevel(self._saved[1])


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
  # Per-class metrics (losses.per_class: NAME/cK) go to TensorBoard only.
  return " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if not _PER_CLASS.search(k))


def _format_seconds(s: float) -> str:
  s = int(round(s))
  return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Setup:
  """A run's parts (`run.Parts.from_config`) on this process's mesh, checked
  before anything is written to the workdir."""

  def __init__(self, config, dataset=None):
    start = time.perf_counter()
    self.parts = run_lib.Parts.from_config(config, dataset)
    # The dataset's load (none when an earlier stage's is reused) and the split.
    self.seconds = time.perf_counter() - start
    self.mesh = parallel.make_mesh()
    self.parts.check_batches(self.mesh)
    evaluate.check_config(config, self.parts.method)
    self.dataset, self.split = self.parts.dataset, self.parts.split
    self.method, self.model = self.parts.method, self.parts.model


def pretrain_config(config) -> ml_collections.ConfigDict:
  """The stage before `config`: `config.pretrain`, on the same data, model and
  seed as `config` (whatever the nested copy says), and with its plots on or
  off as `config`'s. It may have a `pretrain` of its own, so stages chain
  (e.g. rounds of self-training)."""
  stage = config.pretrain.copy_and_resolve_references()
  with stage.unlocked():
    stage.name = f"{config.name}/pretrain"
    stage.data = config.data.copy_and_resolve_references()
    stage.model = config.model.copy_and_resolve_references()
    stage.seed = config.seed
    stage.plots = config.plots
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
  _provenance()
  parallel.use_compilation_cache(config.get("compilation_cache", ""),
                                 datasets.default_cache_dir() / "jax")
  chain = stages(config, workdir)
  # Every stage is checked before any trains; they share config.data
  # (pretrain_config forces it), so one load serves them all.
  setups = []
  produced = {str(d) for _, d in chain}  # init_from folders this chain trains itself
  for stage, stage_dir in chain:
    setups.append(Setup(stage, setups[0].dataset if setups else None))
    check_workdir(stage_dir, stage)
    if stage.init_from and stage.init_from not in produced:
      check_init_from(stage.init_from)
  # Only now is anything written: the workdirs, each held by this process
  # (process 0 of a multi-process run) until the run ends.
  with contextlib.ExitStack() as held:
    if parallel.is_main():
      for _, stage_dir in chain:
        _make_dir(stage_dir)
        held.enter_context(workdir_lib.Lock(stage_dir))
    for i, ((stage, stage_dir), setup) in enumerate(zip(chain, setups)):
      if len(chain) > 1:
        logging.info("stage %d/%d: %s in %s%s", i + 1, len(chain), stage.method, stage_dir,
                     f", from the previous stage's {stage.init_scope}" if i else "")
      results = _run_stage(stage, stage_dir, setup, start_time if i == len(chain) - 1
                           else time.time())
  return results


def _make_dir(path: pathlib.Path):
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise errors.disk_error(e, f"creating the workdir {str(path)!r}") or e from None


def _finished(config, workdir: pathlib.Path):
  """The saved results of a run that has finished, unless asked to evaluate it again."""
  path = workdir / "results.json"
  if config.reevaluate or not path.exists():
    return None
  try:
    results = json.loads(path.read_text())
  except json.JSONDecodeError:
    return None  # cut short by a kill: evaluate again
  logging.info("run %r in %s has finished: test accuracy %.4f (EMA), from %s; "
               "--config.reevaluate=True evaluates it again", config.name, workdir,
               results.get("test_accuracy_ema", float("nan")), path)
  return results


def _run_stage(config, workdir: pathlib.Path, setup: Setup, start_time: float) -> Dict:
  """One checked stage: writes its config and split, trains or evaluates."""
  is_main = parallel.is_main()
  dataset, split, method = setup.dataset, setup.split, setup.method
  finished = _finished(config, workdir)
  if finished is not None:
    return finished
  try:
    if is_main:
      (workdir / "config.json").write_text(config_lib.to_json(config))
      workdir_lib.write_json(workdir / "split.json", {
          "dataset": dataset.name, "num_classes": dataset.num_classes,
          "image_shape": list(dataset.image_shape),
          **({"class_names": list(dataset.class_names)} if dataset.class_names else {}),
          **split.to_json()})
    with _LogFile(workdir / "log.txt") if is_main else contextlib.nullcontext() as log:
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
      return _train(config, workdir, setup, is_main, start_time,
                    log.start if log is not None else None)
  except DiskError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    disk = errors.disk_error(e, f"writing the run's files in {str(workdir)!r}")
    if disk is None:
      raise
    raise disk from None


class Clock:
  """Training time (accumulated over sittings), the first call's compile
  time, and images/s of each log window; evaluations are not training time
  (as big_vision's `chrono`)."""

  def __init__(self, images_per_step: int, train_seconds: float = 0.0,
               earlier_wall_seconds: float = 0.0, start_time: float = None):
    self.images_per_step = images_per_step
    self.train_seconds = train_seconds
    self.earlier_train_seconds = train_seconds  # restored from a checkpoint: earlier sittings'
    self.sitting_start = time.time()
    self.earlier_wall_seconds = earlier_wall_seconds
    self.start_time = start_time or time.time()
    self.compile_seconds = 0.0
    self._window_start, self._window_steps = time.time(), 0

  def step(self, train_step, state, data, steps: int):
    t = time.time()
    state, metrics = train_step(state, data)
    if not self.compile_seconds:
      jax.block_until_ready(state)  # the first call compiles: keep it out of images/s
      self.compile_seconds = time.time() - t
      self._window_start = time.time()
    else:
      self._window_steps += steps
    return state, metrics

  def close_window(self) -> float:
    """Images/s since the last call (after the device synced)."""
    elapsed = time.time() - self._window_start
    rate = self._window_steps * self.images_per_step / elapsed if self._window_steps else 0.0
    self.train_seconds += elapsed
    self._window_start, self._window_steps = time.time(), 0
    return rate

  @contextlib.contextmanager
  def paused(self):
    yield
    self._window_start = time.time()

  def wall_seconds(self) -> float:
    return self.earlier_wall_seconds + time.time() - self.start_time


class _MetricLog:
  """Collects each step's metrics and, at log steps, writes their means,
  stops a diverged run before it is saved, and prints the progress line."""

  def __init__(self, config, writer: MetricWriter, clock: Clock, ckpt, workdir):
    self.config, self.writer, self.clock, self.ckpt = config, writer, clock, ckpt
    self.workdir = workdir
    self.pending = []

  def add(self, metrics):
    self.pending.append(metrics)

  def flush(self, step: int):
    # Fetching the metrics syncs with the device. Every checkpoint step is a
    # flush, and each step's flag is checked here: no diverged state is saved.
    pending, self.pending = self.pending, []
    bad = min(int(m.pop(BAD_STEP)) for m in pending)
    means = _window_means(pending)
    if bad != NO_BAD_STEP or not np.isfinite(means["loss"]):
      per_call = self.config.steps_per_dispatch
      # The loss of that very step when one call is one step, else the window's mean.
      loss = (float(pending[bad - (step - len(pending)) - 1]["loss"])
              if bad != NO_BAD_STEP and per_call == 1 else means["loss"])
      what = f"loss became {loss}" if not np.isfinite(loss) else "the gradient became not finite"
      last = self.ckpt.latest_step()
      raise TrainingError(
          f"training diverged at step {bad if bad != NO_BAD_STEP else step}: {what}; "
          "stopped without saving. "
          + (f"The checkpoints in {self.workdir / 'checkpoints'} are untouched (last good: "
             f"step {last}); " if last is not None else "No checkpoint was saved before it; ")
          + "lower optim.lr (or set optim.grad_clip) or check the data.")
    rate = self.clock.close_window()
    total = self.config.num_steps
    remaining = (total - step) * self.clock.images_per_step / rate if rate else 0
    self.writer.write_scalars(step, {**means, "images_per_second": rate})
    logging.info("step %d/%d (%d%%) %s | %.0f img/s | ETA %s", step, total,
                 100 * step // total, _format_metrics(means), rate, _format_seconds(remaining))


class _Evaluations:
  """Runs the evaluators due at a step on the EMA and raw weights, and
  records them: TensorBoard scalars, the log, and `evals.jsonl` (the full
  record, confusion matrices included)."""

  def __init__(self, config, evaluators, writer, workdir, is_main, start_step: int,
               class_label: Callable[[int], str] = str):
    self.evaluators, self.writer, self.workdir, self.is_main = (evaluators, writer, workdir,
                                                                is_main)
    self.class_label = class_label
    self.report = evaluate.report_name(config, evaluators)
    self.last_round = None
    # step -> the report's EMA test accuracy: earlier sittings' from the log
    # (process 0 keeps it), this sitting's as they come.
    self.history = self._logged(start_step) if is_main else {}

  def _logged(self, start_step: int) -> Dict[int, float]:
    path, history = self.workdir / "evals.jsonl", {}
    if path.exists():
      for line in path.read_text().splitlines():
        try:
          record = json.loads(line)
        except json.JSONDecodeError:
          continue  # a line cut short by a kill
        if self.report in record and record["step"] <= start_step:
          history[record["step"]] = record[self.report]["test_ema"]["accuracy"]
    return history

  def median_of_last(self, count: int) -> Dict:
    """The median EMA test accuracy of the report's last `count` evaluations
    (official FixMatch reports the median of the last 20 checkpoints): a
    noisy last step shows as a gap to the final value."""
    last = [self.history[s] for s in sorted(self.history)][-count:]
    return {"test_accuracy_ema_median": float(np.median(last)), "median_of_evals": len(last)}

  def __call__(self, state: TrainState, step: int, final: bool = False) -> Dict[str, Dict]:
    eval_start = time.time()
    rnd = evaluate.EvalRound({tag: state.variables(tag) for tag in ("ema", "raw")}, step)
    out = {name: self.evaluators[name](rnd) for name in
           evaluate.due(self.evaluators, step, final)}
    self.last_round = rnd
    if not out:
      return out
    if self.report in out:
      self.history[step] = out[self.report]["test_ema"]["accuracy"]
    scalars = evaluate.scalars(out)
    self.writer.write_scalars(step, scalars)
    logging.info("eval step %d: %s", step, _format_metrics(scalars))
    if self.report in out:
      logging.info("eval step %d: per-class test accuracy (%s, EMA) %s", step, self.report,
                   " ".join(f"{self.class_label(c)}:{a:.3f}" for c, a in
                            enumerate(out[self.report]["test_ema"]["per_class_accuracy"])))
    if self.is_main:
      with open(self.workdir / "evals.jsonl", "a") as f:
        # The clock time, for time-to-accuracy measurements across stages,
        # and what the evaluation itself took, which they leave out.
        f.write(json.dumps({"step": step, "time": round(time.time(), 3),
                            "eval_seconds": round(time.time() - eval_start, 3),
                            "report": self.report, **out}) + "\n")
    return out


def _restore_or_init(config, setup, tx, ckpt, start_time) -> Tuple[TrainState, Clock]:
  """The latest checkpoint of this workdir, else `init_from`'s weights, else
  a fresh initialisation; with the clock of the sittings so far."""
  state = init_state(setup.model, tx, config, setup.dataset.image_shape, setup.mesh,
                     setup.method.init_state(int(setup.split.unlabeled.size)))
  # Times accumulate over sittings: a resumed run reports its whole cost.
  clock = Clock(setup.method.images_per_step, start_time=start_time)
  if ckpt.latest_step() is not None:
    try:
      state, extra = ckpt.restore(state, fill_missing=("method_state",))
      if extra["filled"] and jax.tree.leaves(state.method_state):
        logging.warning("the checkpoint predates method state: the method's state "
                        "(%s) starts fresh at step %d", config.method, extra["step"])
    except (ValueError, KeyError, TypeError) as e:
      raise WorkdirError(f"the checkpoints in {ckpt.directory} do not fit this config's "
                         f"model and optimizer ({str(e).splitlines()[0][:200]}); use another "
                         "--workdir") from None
    state = parallel.put_replicated(state, setup.mesh)
    clock.train_seconds = clock.earlier_train_seconds = float(extra.get("train_seconds", 0.0))
    clock.earlier_wall_seconds = float(extra.get("wall_seconds", 0.0))
    logging.info("resumed from step %d of %s", int(state.step), ckpt.directory)
  elif config.init_from:
    state = load_init_from(state, config)
    logging.info("initialised %s from %s", config.init_scope, config.init_from)
  return state, clock


def _prepare_data(setup, phases) -> Tuple[input_pipeline.TrainData, float]:
  """The method's data on the host (the split, plus what `prepare` adds) and
  the seconds it took, added to `phases` by the method's own stages."""
  t = time.time()
  data = inference.prepare_method(setup.parts)
  seconds = time.time() - t
  if data.pseudo_labels is not None:
    logging.info("prepared pseudo-labels for %d unlabeled images in %s (%.0f%% weighted)",
                 data.pseudo_labels.shape[0], _format_seconds(seconds),
                 100 * float(np.mean(data.pseudo_weights > 0)))
  inner = setup.method.record().get("prepare_phases", {})
  for name, stage_seconds in inner.items():  # the method's own stages (the graph's)
    phases.add(f"prepare: {name}", stage_seconds)
  # At least 0: the method's own phases are rounded to the millisecond.
  phases.add("prepare: other" if inner else "prepare", max(0.0, seconds - sum(inner.values())))
  return data, seconds


class ClassShares:
  """Each class's share of the pseudo-labels (after `prepare`) and of the
  network's predictions on the unlabeled images (at the end), logged, warned
  about when far from what the labeled set implies (`config.share_warn`),
  and recorded in results.json. Reads no hidden label."""
  MAX_IMAGES = 10_000  # predictions on a fixed subset: seconds, not a pass over the set

  def __init__(self, config, setup, host_data: input_pipeline.TrainData):
    self.config, self.setup, self.data = config, setup, host_data
    self.num_classes = setup.dataset.num_classes
    self.expected = shares_lib.expected_shares(host_data.labeled_labels, self.num_classes,
                                               tuple(config.data.class_prior))
    self.record = {}

  def _note(self, key: str, what: str, shares):
    self.record[key] = shares.round(6).tolist()
    names = self.setup.parts.class_names
    logging.info("class shares of %s: %s", what, shares_lib.format_shares(shares, names))
    found = shares_lib.warnings(shares, self.expected, what, self.config.share_warn.low,
                                self.config.share_warn.high, names)
    for line in found:
      logging.warning("%s", line)
    self.record.setdefault("class_share_warnings", []).extend(found)

  def pseudo_labels(self):
    raw = self.setup.method.record().get("raw_pseudo_label_shares")
    if raw is not None:
      self._note("raw_pseudo_label_shares", "Poisson learning's labels (before size bounds "
                 "and re-seeding)", np.asarray(raw))
    if self.data.pseudo_labels is not None and len(self.data.pseudo_labels):
      self._note("pseudo_label_shares", "the pseudo-labels",
                 shares_lib.class_shares(self.data.pseudo_labels, self.num_classes,
                                         self.data.pseudo_weights))

  def predictions(self, state):
    images = self.data.unlabeled_images
    if not len(images) or datasets.is_bags(self.setup.dataset):
      return
    pick = np.linspace(0, len(images) - 1, min(len(images), self.MAX_IMAGES)).astype(int)
    model, mesh = self.setup.model, self.setup.mesh
    predict = evaluate.make_predict(lambda v, x: model.apply(v, x, train=False),
                                    self.config.eval_batch_size, parallel.batch_sharded(mesh))
    predicted = predict(state.variables("ema"), parallel.put_replicated(images[pick], mesh))
    self._note("unlabeled_prediction_shares", "the network's predictions on the unlabeled "
               "images", shares_lib.class_shares(predicted, self.num_classes))


def _build_evaluators(config, setup, data, eval_sets) -> Dict[str, evaluate.Evaluator]:
  ctx = evaluate.EvalContext(
      model=setup.model, method=setup.method, eval_sets=eval_sets,
      labeled_images=data.labeled_images, labeled_labels=data.labeled_labels,
      num_classes=setup.dataset.num_classes, batch_size=config.eval_batch_size,
      sharding=parallel.batch_sharded(setup.mesh),
      steps_per_epoch=config_lib.steps_per_epoch(config, setup.split.labeled.size))
  return evaluate.build(config, ctx)


def _train(config, workdir, setup, is_main, start_time, log_start=None) -> Dict:
  # For the state's structure; the step builds its own from its schedule's numbers.
  tx, _ = optim.for_config(config)
  # Every process takes part in saving (Orbax coordinates them: process 0
  # writes the metadata, one copy of each replicated array is written).
  ckpt = checkpoint.Checkpointer(workdir / "checkpoints", keep=config.keep_checkpoints)
  phases = phases_lib.Phases()
  phases.add("data load", setup.seconds)
  with phases.timed("init or restore"):
    state, clock = _restore_or_init(config, setup, tx, ckpt, start_time)
  if is_main:  # the logs of steps the checkpoint does not hold are computed again
    workdir_lib.cut_back(workdir, int(state.step), log_start,
                         final=int(state.step) >= config.num_steps)
  host_data, prepare_seconds = _prepare_data(setup, phases)
  class_shares = ClassShares(config, setup, host_data)
  class_shares.pseudo_labels()
  fed = config.data.get("pipeline", "device") == "tfdata"
  # With the tf.data pipeline the unlabeled images stay on the host; the
  # labeled examples go to the device for the evaluators that use them.
  data = input_pipeline.to_device(host_data.replace(
      unlabeled_images=host_data.unlabeled_images[:0], pseudo_labels=None,
      pseudo_weights=None) if fed else host_data, setup.mesh)
  eval_sets = input_pipeline.make_eval_sets(setup.dataset, setup.split, setup.mesh)
  # What a method adds at prediction (a graph's vote) is fixed for the run:
  # the evaluators compute it once, here, so it counts as preparation.
  t = time.time()
  evaluators = _build_evaluators(config, setup, data, eval_sets)
  prepare_seconds += time.time() - t
  phases.add("evaluator set-up (vote)", time.time() - t)
  train_step = make_train_step(setup.model, setup.method, config, setup.mesh, fed=fed)
  writer = MetricWriter(workdir, enabled=is_main)
  metric_log = _MetricLog(config, writer, clock, ckpt, workdir)
  evaluations = _Evaluations(config, evaluators, writer, workdir, is_main, int(state.step),
                             setup.parts.class_label)

  step, n = int(state.step), config.steps_per_dispatch
  if fed:  # batches for the steps left, a pure function of (seed, step)
    feed = tf_pipeline.batches(
        host_data, labeled_size=setup.method.labeled_batch_size,
        unlabeled_size=setup.method.unlabeled_batch_size, seed=config.seed, start=step,
        stop=config.num_steps, per_step=n, mesh=setup.mesh,
        host_augment=config.data.host_augment,
        hflip_allowed=datasets.hflip_allowed(config.data))
  try:
    while step < config.num_steps:
      state, metrics = clock.step(train_step, state, next(feed) if fed else data, n)
      step += n
      last = step >= config.num_steps
      metric_log.add(metrics)
      if step % config.log_every == 0 or step % config.checkpoint_every == 0 or last:
        metric_log.flush(step)
      if not last and evaluate.due(evaluators, step, final=False):
        with clock.paused(), phases.timed("evaluations"):
          evaluations(state, step)
      if step % config.checkpoint_every == 0 or last:
        with clock.paused(), phases.timed("checkpoint writes"):
          ckpt.save(step, state, train_seconds=np.float64(clock.train_seconds),
                    wall_seconds=np.float64(clock.wall_seconds()))
  except Exception as e:  # pylint: disable=broad-except
    disk = e if isinstance(e, DiskError) else errors.disk_error(
        e, f"writing the run's logs in {str(workdir)!r}")
    if disk is None:
      raise
    last = ckpt.latest_step()
    raise DiskError(f"{disk}. The checkpoints saved so far are kept: the same command then "
                    + (f"resumes from step {last}" if last is not None else "starts over")
                    ) from None
  finally:
    # Waits for a save in flight, also when training stops on an error, so
    # that no checkpoint is left half-written by this process.
    with contextlib.suppress(Exception), phases.timed("checkpoint writes"):
      ckpt.wait()
      ckpt.close()

  return _finish(config, workdir, setup, is_main, state, clock, prepare_seconds, host_data,
                 evaluations, writer, class_shares, phases)


def _finish(config, workdir, setup, is_main, state, clock, prepare_seconds, host_data,
            evaluations, writer, class_shares, phases) -> Dict:
  """The final evaluation, results.json and the plots of a trained stage."""
  step = int(state.step)
  with phases.timed("evaluations"):
    final = evaluations(state, step, final=True)
    class_shares.predictions(state)
  # The steps: training time less the first call, which compiled (this sitting's).
  phases.add("compile", clock.compile_seconds)
  phases.add("steps", clock.train_seconds - clock.earlier_train_seconds)
  results = _results(config, setup, final, evaluations.report, evaluators=evaluations.evaluators,
                     timing={
      "steps": step, "train_seconds": clock.train_seconds,
      "compile_seconds": clock.compile_seconds, "prepare_seconds": prepare_seconds,
      "wall_seconds": clock.wall_seconds(),
      "images_per_second": (config.num_steps * setup.method.images_per_step /
                            clock.train_seconds if clock.train_seconds else 0.0)})
  results.update(evaluations.median_of_last(config.eval_median_of))
  if host_data.pseudo_labels is not None:
    # Label-free: how the pseudo-labels spread over the classes (kept ones).
    kept = host_data.pseudo_weights > 0
    results["pseudo_label_counts"] = np.bincount(
        host_data.pseudo_labels[kept], minlength=setup.dataset.num_classes).tolist()
  results.update(setup.method.record())
  results.update(class_shares.record)
  # This sitting's phases (a resumed run's earlier sittings are not in them).
  results["phase_seconds"] = phases.record(time.time() - clock.sitting_start + setup.seconds)
  try:
    if is_main:
      workdir_lib.write_json(workdir / "results.json", results)
      if config.plots:
        _draw(workdir, setup, evaluations.last_round, evaluations.report, state, writer)
  finally:
    writer.close()
  logging.info("done: test accuracy %.4f (EMA), %.4f (raw) after %d steps, %s of "
               "training, %.0f img/s", results["test_accuracy_ema"],
               results["test_accuracy_raw"], step, _format_seconds(clock.train_seconds),
               results["images_per_second"])
  logging.info("phases: %s", phases_lib.Phases.format(results["phase_seconds"]))
  return results


def _draw(workdir, setup, round_, report, state=None, writer=None):
  """The run's figures; a figure that fails costs a warning, not the run
  (its results are saved already)."""
  try:
    plots.draw_run(workdir, parts=setup.parts, round_=round_, report=report, state=state,
                   writer=writer)
  except Exception as e:  # pylint: disable=broad-except
    logging.warning("plots failed (%s: %s); the run's results are saved. Redraw with: "
                    "python -m mnist_ten.plots %s", type(e).__name__, e, workdir)


@functools.lru_cache(maxsize=None)
def _provenance() -> Dict:
  """The code and library versions a result was measured with: read once,
  when the process's first run starts (the code it loaded then is the code
  that runs, whatever changes in the checkout afterwards)."""
  import flax as flax_lib  # pylint: disable=g-import-not-at-top
  import jaxlib  # pylint: disable=g-import-not-at-top
  out = {"jax_version": jax.__version__, "jaxlib_version": jaxlib.__version__,
         "flax_version": flax_lib.__version__, "optax_version": optax.__version__,
         "git_commit": None, "git_dirty": None}
  repo = pathlib.Path(__file__).resolve().parents[1]
  git = lambda *args: subprocess.run(["git", "-C", str(repo), *args], capture_output=True,  # pylint: disable=unnecessary-lambda-assignment
                                     text=True, timeout=10)
  try:
    top = git("rev-parse", "--show-toplevel")
    # This project's own checkout, not a repository it happens to be installed in.
    if top.returncode == 0 and pathlib.Path(top.stdout.strip()).resolve() == repo:
      out["git_commit"] = git("rev-parse", "HEAD").stdout.strip()
      # The code only: results and docs that runs and their tables rewrite do not count.
      status = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                   ":(exclude)experiments/results", ":(exclude)docs", ":(exclude)*.md")
      out["git_dirty"] = bool(status.stdout.strip())
  except (OSError, subprocess.SubprocessError):
    pass  # not a git checkout (an installed wheel): versions only
  return out


def _results(config, setup, final: Dict[str, Dict], report: str, timing: Dict,
             evaluators=None) -> Dict:
  """The results.json record of a finished run: the report evaluator's
  metrics under the historical keys, every evaluator's final accuracies, and
  provenance."""
  labeled, evaluators = setup.split.labeled, evaluators or {}
  ema, raw = final[report]["test_ema"], final[report]["test_raw"]
  results = {
      "config": config.name, "method": config.method, "model": config.model.name,
      "dataset": setup.dataset.name, "label_seed": config.data.label_seed,
      "labels_per_class": config.data.labels_per_class,
      "labeled_indices": labeled.tolist() if labeled.size <= 1000 else
      f"{labeled.size} indices, see split.json",
      "test_accuracy_ema": ema["accuracy"], "test_accuracy_raw": raw["accuracy"],
      "test_macro_f1_ema": ema["macro_f1"], "test_macro_f1_raw": raw["macro_f1"],
      "test_per_class_accuracy_ema": ema["per_class_accuracy"],
      "test_confusion_ema": ema["confusion"], **timing,
      "report_eval": report,
      "evals": {name: {key: m["accuracy"] for key, m in out.items()}
                for name, out in final.items()},
      "device_kind": jax.devices()[0].device_kind, "num_devices": setup.mesh.size,
      **_provenance(),
  }
  for extra in ("auc", "instance_auc"):  # bags (evaluator mil)
    if extra in ema:
      results[f"test_{extra}_ema"], results[f"test_{extra}_raw"] = ema[extra], raw.get(extra)
  if "val_ema" in final[report]:
    results["val_accuracy_ema"] = final[report]["val_ema"]["accuracy"]
  heads = [name for name in final if getattr(evaluators.get(name), "kind", "") == "head"]
  if getattr(evaluators.get(report), "kind", "") == "vote" and heads:
    # The EMA network without the method's vote.
    results["test_accuracy_network_ema"] = final[heads[0]]["test_ema"]["accuracy"]
  return results


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
  results = _results(config, setup, {"predict": {"test_ema": metrics, "test_raw": metrics}},
                     "predict", timing={"steps": 0, "train_seconds": time.time() - t,
                                 "wall_seconds": time.time() - t, "images_per_second": 0.0})
  if is_main:
    workdir_lib.write_json(workdir / "results.json", results)
    if config.plots:
      rnd = evaluate.EvalRound({})
      rnd.predictions[("predict", "test_ema")] = (predictions, np.ones(len(predictions)))
      _draw(workdir, setup, rnd, "predict")
  logging.info("%s: test accuracy %.4f, macro-F1 %.4f", config.method,
               metrics["accuracy"], metrics["macro_f1"])
  return results
