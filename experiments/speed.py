"""The timed pieces of `experiments/benchmark.py`, importable without its
command-line flags (the tests use them): a turn-taking timer, the JAX and
PyTorch steps it times, and the time-to-accuracy run.
"""
import importlib
import json
import pathlib
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from configs import default as default_config  # pylint: disable=g-import-not-at-top
from configs import fixmatch as fixmatch_config  # pylint: disable=g-import-not-at-top
from configs import supervised as supervised_config  # pylint: disable=g-import-not-at-top
from mnist_ten import config as config_lib  # pylint: disable=g-import-not-at-top
from mnist_ten import datasets  # pylint: disable=g-import-not-at-top
from mnist_ten import errors  # pylint: disable=g-import-not-at-top
from mnist_ten import input_pipeline  # pylint: disable=g-import-not-at-top
from mnist_ten import losses  # pylint: disable=g-import-not-at-top
from mnist_ten import models  # pylint: disable=g-import-not-at-top
from mnist_ten import optim  # pylint: disable=g-import-not-at-top
from mnist_ten import phases as phases_lib  # pylint: disable=g-import-not-at-top
from mnist_ten import tf_pipeline  # pylint: disable=g-import-not-at-top
from mnist_ten import train  # pylint: disable=g-import-not-at-top

# (labeled, unlabeled views); default: configs/default.py's step (16 labeled,
# 8 x 16 unlabeled with pseudo-labels).
SHAPES = {"supervised": (64, 0), "fixmatch": (64, 2 * 7 * 64), "default": (16, 8 * 16),
          # FixMatch's shape on random 32x32x3 images, as many as MNIST's (whole steps only).
          "fixmatch_rgb32": (64, 2 * 7 * 64)}
RGB_SHAPES = {"fixmatch_rgb32": (32, 32, 3)}
# The config (module, preset) whose trainer step `jax_full_step` times, per shape.
# default: one round; its step is the same in every round.
FULL_STEP_CONFIGS = {"supervised": (supervised_config, None),
                     "fixmatch": (fixmatch_config, None), "default": (default_config, "rounds=1"),
                     "fixmatch_rgb32": (fixmatch_config, None)}
# The variants of that step timed beside the config as it ships: name -> config
# overrides (flattened paths).
FULL_STEP_VARIANTS = {"fixmatch": {f"weak_pass={p}": {"fixmatch.weak_pass": p}
                                    for p in ("no_grad", "separate")}}
# Every shape's step is also timed fed by the tf.data pipeline (mnist_ten/tf_pipeline.py).
for _shape in FULL_STEP_CONFIGS:
  FULL_STEP_VARIANTS.setdefault(_shape, {})["pipeline=tfdata"] = {"data.pipeline": "tfdata"}
# Benchmarked networks: name -> (registered model, its arguments), the same
# in both frameworks. lenet_nobn is the network of ../shared/README.md's
# reference timing (JAX ~1.1 s, PyTorch 2.13 0.37-0.49 s at 960 images).
BENCH_MODELS = {"lenet": ("lenet", {}), "lenet_nobn": ("lenet", {"batch_norm": False}),
                "resnet": ("resnet", {})}
LR, MOMENTUM = 0.03, 0.9
# USB (semilearn 0.3.2) FixMatch step with its LeNet-sized CNN on this 2-core
# CPU, data loading and augmentation included (../shared/README.md).
USB_FIXMATCH_LENET_STEP_MS = 790.0


def time_calls(calls, repeats):
  """{name: (seconds of the first call, median seconds of the next `repeats`,
  all of them)}. The calls take turns, one timing each per round, so that a
  slow spell of a shared machine falls on all of them alike."""
  first, times = {}, {name: [] for name in calls}
  for name, fn in calls.items():
    t = time.perf_counter()
    fn()
    first[name] = time.perf_counter() - t
  for _ in range(repeats):
    for name, fn in calls.items():
      t = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - t)
  return {name: (first[name], statistics.median(times[name]), times[name]) for name in calls}


def jax_compute(model_name, kernel_grad, num_images):
  """Forward + backward + Nesterov SGD on one fixed batch, jit-compiled, state donated."""
  name, kwargs = BENCH_MODELS[model_name]
  model = models.build(config_lib.model_config(name, kernel_grad=kernel_grad, **kwargs), 10)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.random((num_images, 28, 28, 1), np.float32))
  y = jnp.asarray(rng.integers(0, 10, num_images))
  variables = model.init(jax.random.key(0), x[:2])
  tx = optax.sgd(LR, momentum=MOMENTUM, nesterov=True)
  state = (variables["params"], variables.get("batch_stats", {}),
           tx.init(variables["params"]))

  def step(state, x, y):
    params, stats, opt_state = state

    def loss_fn(p):
      logits, updates = model.apply({"params": p, "batch_stats": stats}, x, train=True,
                                    mutable=["batch_stats"])
      return losses.cross_entropy(logits, y), updates["batch_stats"]
    (_, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), stats, opt_state

  step = jax.jit(step, donate_argnums=0)
  box = [state]

  def call():
    box[0] = step(box[0], x, y)
    jax.block_until_ready(box[0])
  return call


def jax_full_step(model_name, kernel_grad, shape, overrides=None):
  """The trainer's own step for the method of this shape, on MNIST, with the
  config `overrides` ({flattened path: value}) applied. A method that trains
  on pseudo-labels (default's graph propagation) gets random ones instead of
  building its graph: the step's work does not depend on their values."""
  module, preset = FULL_STEP_CONFIGS[shape]
  config = module.get_config(preset)
  name, kwargs = BENCH_MODELS[model_name]
  config.model = config_lib.model_config(name, kernel_grad=kernel_grad, **kwargs)
  config.update_from_flattened_dict(overrides or {})
  setup = train.Setup(config, _random_images(RGB_SHAPES[shape]) if shape in RGB_SHAPES else None)
  tx, _ = optim.for_config(config)
  state = train.init_state(setup.model, tx, config, setup.dataset.image_shape, setup.mesh)
  data = input_pipeline.host_train_data(setup.dataset, setup.split)
  if config.method == "propagate":
    rng = np.random.default_rng(0)
    n = data.unlabeled_images.shape[0]
    data = data.replace(
        pseudo_labels=rng.integers(0, setup.dataset.num_classes, n).astype(np.int32),
        pseudo_weights=np.ones(n, np.float32))
  fed = config.data.pipeline == "tfdata"
  step = train.make_train_step(setup.model, setup.method, config, setup.mesh, fed=fed)
  if fed:  # batches as training reads them; the wait for each is kept
    feed = tf_pipeline.batches(data, labeled_size=setup.method.labeled_batch_size,
                               unlabeled_size=setup.method.unlabeled_batch_size, seed=0,
                               start=0, stop=1 << 30, per_step=1, mesh=setup.mesh,
                               host_augment=config.data.host_augment,
                               hflip_allowed=datasets.hflip_allowed(config.data))
  else:
    data = input_pipeline.to_device(data, setup.mesh)
  box = [state]

  def call():
    if fed:
      t = time.perf_counter()
      inputs = next(feed)
      call.input_waits.append(time.perf_counter() - t)
    box[0], metrics = step(box[0], inputs if fed else data)
    jax.block_until_ready((box[0], metrics))
  call.input_waits = [] if fed else None
  return call, setup.method.images_per_step


def _random_images(shape, num_train=60_000, num_test=10_000):
  """Random uint8 images of `shape` and labels, as many as MNIST's: the
  step's work does not depend on their values."""
  rng = np.random.default_rng(0)
  return datasets.Dataset(
      f"random_{'x'.join(map(str, shape))}",
      rng.integers(0, 256, (num_train, *shape), dtype=np.uint8),
      rng.integers(0, 10, num_train).astype(np.int32),
      rng.integers(0, 256, (num_test, *shape), dtype=np.uint8),
      rng.integers(0, 10, num_test).astype(np.int32), num_classes=10)


def torch_compute(model_name, num_images, device="cpu"):
  """The jax_compute step in PyTorch on `device` ("cpu" or "cuda"); returns
  the timed call, torch's version and its CPU threads."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top

  def lenet(batch_norm=True):
    layers = []
    for cin, cout in ((1, 32), (32, 64)):
      layers += ([nn.Conv2d(cin, cout, 5, padding=2, bias=not batch_norm)]
                 + [nn.BatchNorm2d(cout)] * batch_norm + [nn.ReLU(), nn.MaxPool2d(2)])
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(),
                         nn.Linear(128, 10))

  class Block(nn.Module):
    def __init__(self, cin, cout, stride):
      super().__init__()
      self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
      self.bn1 = nn.BatchNorm2d(cout)
      self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
      self.bn2 = nn.BatchNorm2d(cout)
      self.shortcut = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                     nn.BatchNorm2d(cout))
                       if cin != cout or stride != 1 else nn.Identity())

    def forward(self, x):
      y = torch.relu(self.bn1(self.conv1(x)))
      return torch.relu(self.shortcut(x) + self.bn2(self.conv2(y)))

  def resnet(widths=(16, 32, 64)):
    layers = [nn.Conv2d(1, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]),
              nn.ReLU()]
    cin = widths[0]
    for i, w in enumerate(widths):
      layers.append(Block(cin, w, 2 if i else 1))
      cin = w
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 10)]
    return nn.Sequential(*layers)

  torch.manual_seed(0)
  name, kwargs = BENCH_MODELS[model_name]
  net = {"lenet": lenet, "resnet": resnet}[name](**kwargs).to(device)
  opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM, nesterov=True)
  rng = np.random.default_rng(0)
  x = torch.from_numpy(rng.random((num_images, 1, 28, 28), np.float32)).to(device)
  y = torch.from_numpy(rng.integers(0, 10, num_images)).to(device)
  net.train()
  if device == "cuda":
    # What a user tuning for speed sets: cuDNN picks the fastest algorithms.
    torch.backends.cudnn.benchmark = True

  def call():
    opt.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(net(x), y).backward()
    opt.step()
    if device == "cuda":
      torch.cuda.synchronize()  # time the work, not its launch
  return call, torch.__version__, torch.get_num_threads()


def load_config(config_arg):
  """configs/NAME.py[:preset] -> the config."""
  path, _, preset = config_arg.partition(":")
  module = importlib.import_module("configs." + pathlib.Path(path).stem)
  return module.get_config(preset or None)


class WorkdirNotEmpty(errors.WorkdirError):
  """time_to_accuracy's workdir holds something: a run there would resume,
  and its time would not be the time from scratch."""


def time_to_accuracy(config, target, eval_every, label_seed, workdir=None):
  """Trains `config` from scratch in a fresh folder; returns a record with
  the first time (from the start, every stage counted, the timing
  evaluations left out) at which an evaluation of the EMA model reached
  `target`, and the final accuracy."""
  # Earlier stages take their data and seed from the last one (train.pretrain_config).
  config.data.label_seed = config.seed = label_seed
  stage, stages = config, []
  while stage.get("method"):
    stage.eval_every = eval_every
    for cfg in stage.evals.values():
      if cfg.get("every") == -1:  # at the end only: the curve needs every evaluation
        cfg.every = 0
    stage.plots = False  # figures are not training time (every stage takes the last's)
    stages.append(stage)
    stage = stage.pretrain
  workdir = pathlib.Path(workdir or tempfile.mkdtemp(prefix="time_to_accuracy_"))
  if workdir.exists() and any(workdir.iterdir()):  # checked before any work
    raise WorkdirNotEmpty(f"time_to_accuracy: workdir {workdir} is not empty; give a new folder")
  start = time.time()
  results = train.train_and_evaluate(config, workdir)
  total = time.time() - start
  record = {"config": config.name, "label_seed": label_seed, "target": target,
            "eval_every": eval_every, "wall_seconds_total": round(total, 1),
            "final_test_accuracy_ema": results["test_accuracy_ema"],
            **_curve_to_target(workdir, len(stages), start, target), "workdir": str(workdir)}
  reached, eval_total = record["seconds_to_target"] is not None, record["evaluation_seconds"]
  print(f"{config.name}, label seed {label_seed}: final test accuracy (EMA) "
        f"{results['test_accuracy_ema']:.4f} after {total / 60:.1f} min "
        f"({eval_total / 60:.1f} of them in the timing evaluations); "
        + (f"{target:.2%} first reached after {record['seconds_to_target'] / 60:.1f} min"
           if reached else f"{target:.2%} not reached"), flush=True)
  return record


def _curve_to_target(workdir, num_stages, start, target):
  """From a run's evals.jsonl files (every stage, in time order): the time
  from `start` at which the EMA model first reached `target`, less the
  evaluations up to then (they exist only to time the run), and the curve."""
  evals = []
  for depth in range(num_stages):
    log = pathlib.Path(workdir).joinpath(*["pretrain"] * depth) / "evals.jsonl"
    if log.exists():
      evals += [json.loads(line) for line in log.read_text().splitlines()]
  evals.sort(key=lambda e: e["time"])
  eval_total = 0.0
  for e in evals:
    eval_total += e.get("eval_seconds", 0.0)
    e["train_time"] = e["time"] - start - eval_total
  # The reported evaluator's EMA test accuracy (logs from before config.evals
  # held it at the top level). Lines without it (other evaluators' cadences)
  # count for their time only.
  for e in evals:
    record = e.get(e.get("report"), e)
    e["accuracy"] = record["test_ema"]["accuracy"] if "test_ema" in record else None
  evals = [e for e in evals if e["accuracy"] is not None]
  reached = next((e for e in evals if e["accuracy"] >= target), None)
  return {"seconds_to_target": round(reached["train_time"], 1) if reached else None,
          "evaluation_seconds": round(eval_total, 1),
          # (seconds from the start less evaluations, step, test accuracy of the EMA model)
          "curve": [(round(e["train_time"], 1), e["step"], e["accuracy"]) for e in evals]}


def stage_phases(workdir, num_stages: int) -> dict:
  """The run's seconds per phase (results.json's `phase_seconds`), summed over
  its stages; {} for runs from before phases were recorded."""
  total = {}
  for depth in range(num_stages):
    path = pathlib.Path(workdir).joinpath(*["pretrain"] * depth) / "results.json"
    phases = json.loads(path.read_text()).get("phase_seconds", {}) if path.exists() else {}
    for name, seconds in phases.items():
      total[name] = round(total.get(name, 0.0) + seconds, 3)
  return total


def time_to_target_of_runs(folder, target):
  """`time_to_accuracy`'s figures read back from finished runs, one per
  `seed_N` folder of an `experiments/run_seeds.py` output, or of `folder`
  itself when it holds one run (an ensemble's member): [record]. A run
  starts at the first line of its first stage's log.txt (written once the
  data are loaded, a second or two in); its evaluations come every
  `eval_every` steps of its config, so the time is that of the first
  evaluation at or past `target`: an upper bound on a coarse grid."""
  folder = pathlib.Path(folder)
  if not folder.is_dir():
    raise errors.WorkdirError(f"time_to_target_of_runs: no folder {folder}")
  records = []
  seed_dirs = sorted((d for d in folder.glob("seed_*") if d.name[5:].isdigit()),
                     key=lambda d: int(d.name[5:]))
  if (folder / "results.json").exists():
    seed_dirs = [folder]
  for seed_dir in seed_dirs:
    stages = 1
    while (seed_dir.joinpath(*["pretrain"] * stages) / "log.txt").exists():
      stages += 1
    first_log = seed_dir.joinpath(*["pretrain"] * (stages - 1)) / "log.txt"
    if not first_log.exists() or not (seed_dir / "results.json").exists():
      continue  # not a finished run
    stamp = first_log.read_text().split(" INFO ", 1)[0]  # "2026-11-29 18:39:57,187"
    start = (time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S"))
             + int(stamp[20:23]) / 1e3)
    results = json.loads((seed_dir / "results.json").read_text())
    record = {"run": str(seed_dir), "label_seed": results["label_seed"], "target": target,
              "final_test_accuracy_ema": results["test_accuracy_ema"],
              **_curve_to_target(seed_dir, stages, start, target),
              "phase_seconds": stage_phases(seed_dir, stages)}
    records.append(record)
    to_target = record["seconds_to_target"]
    print(f"{seed_dir}: final test accuracy (EMA) {record['final_test_accuracy_ema']:.4f}; "
          + (f"{target:.2%} first seen {to_target / 60:.1f} min in" if to_target is not None
             else f"{target:.2%} not reached"), flush=True)
    if record["phase_seconds"]:
      print("  phases, every stage: " + phases_lib.Phases.format(record["phase_seconds"]))
  if not records:
    raise errors.WorkdirError(f"time_to_target_of_runs: {folder} holds no finished run "
                     "(seed_N/ with results.json, as experiments/run_seeds.py writes)")
  return records
