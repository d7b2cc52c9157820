"""The base config every `configs/*.py` starts from, and its validation.

Config files call `base()` and change what their method needs; presets come
from the string after the colon (`configs/supervised.py:quick,model=mlp`).
"""
import ast
import inspect
import json
import re
from typing import Dict, Tuple

import ml_collections

from mnist_ten import models
from mnist_ten.errors import ConfigError


def model_config(name: str, **overrides) -> ml_collections.ConfigDict:
  """`{'name': name, **the model's keyword defaults}`, so every argument of the
  chosen model can be overridden on the command line."""
  factory = models.MODELS.get(name)
  fields = {k: p.default for k, p in inspect.signature(factory).parameters.items()
            if p.kind == p.KEYWORD_ONLY}
  unknown = set(overrides) - set(fields)
  if unknown:
    raise ConfigError(f"model {name!r} has no argument(s) {sorted(unknown)}")
  return ml_collections.ConfigDict({"name": name, **fields, **overrides})


def data_config() -> ml_collections.ConfigDict:
  """`config.data`: where the images come from and which are labeled."""
  return ml_collections.ConfigDict(dict(
      name="mnist",         # any TFDS image-classification dataset, or "folder"
      dir="",               # data.name="folder": the folder with labels.csv (mnist_ten/folders.py)
      image_size=(),        # folders: resize to (height, width); (): the images' own size
      color="auto",         # folders: grayscale | rgb | auto
      test_fraction=0.2,    # folders without test.csv: labeled images held out for testing
      test_seed=0,          # ... drawn by this seed
      data_dir="",          # TFDS data dir; default: $TFDS_DATA_DIR or ~/tensorflow_datasets
      idx_dir="",           # or a folder of the four MNIST-format IDX .gz files
      cache_dir="",         # array cache; default: $MNIST_TEN_CACHE or ~/.cache/mnist_ten
      download=True,        # let TFDS download when the data is not prepared
      pipeline="device",    # device: arrays on the accelerator | tfdata (mnist_ten/tf_pipeline.py)
      host_augment="",      # tfdata only: host-side tf ops first, e.g. "hflip|crop(pad=2)"
      labels_per_class=1,   # -1: every train label
      label_seed=0,         # which examples are labeled
      labeled_indices=(),   # explicit train indices; overrides the draw
      labeled_file="",      # or a proposal.json (python -m mnist_ten.propose) holding them
      labeled_count=0,      # > 0: only the first N of labeled_file
      validation_size=0,    # train images held out, labels for monitoring only
      num_unlabeled=0,      # > 0: a draw of that many unlabeled images; 0: all
      standardize=False,    # inputs minus the train images' mean, over their std
      synthetic=ml_collections.ConfigDict(),  # a synthetic dataset's sizes and seed
      bags=ml_collections.ConfigDict(),  # set: bags of instances (datasets.make_bags)
      class_prior=(),       # each class's share of the data, if known; (): the labeled set's
      hflip="auto",         # whether horizontal flips keep labels: auto|true|false
  ))


def base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = ""  # set by each config file, recorded in results.json
  c.method = "supervised"
  c.seed = 0  # initialisation and per-step randomness; the label draw is data.label_seed

  c.data = data_config()
  c.model = model_config("resnet")

  c.batch_size = 64  # labeled examples per step
  c.augment = ml_collections.ConfigDict(dict(
      labeled="affine(rotate=10, shift=0.1, scale=0.1, shear=10)"))
  c.label_smoothing = 0.0
  # The rotation/flip pretext task as an auxiliary loss beside any method (S4L;
  # ReMixMatch's rotation loss): weight > 0 adds weight x the cross-entropy of
  # predicting the transform of `images` unlabeled images a step (0: as many
  # as the labeled batch), through an auxiliary head (methods/pretext.py).
  c.rotation_aux = ml_collections.ConfigDict(dict(weight=0.0, images=0))

  c.optim = ml_collections.ConfigDict(dict(
      name="sgd", lr=0.03, momentum=0.9, nesterov=True, b1=0.9, b2=0.999,
      weight_decay=5e-4, schedule="cosine", warmup_steps=0,
      final_lr_fraction=0.0, grad_clip=0.0))
  c.ema_decay = 0.999  # 0 disables; evaluation reports EMA and raw weights

  c.num_steps = 1000
  # > 0: train this many epochs of the labeled set instead (num_steps, and
  # any of log_every, eval_every, checkpoint_every left at 0, follow from it).
  c.num_epochs = 0.0
  c.steps_per_dispatch = 1  # steps run inside one jit call (lax.scan)
  c.log_every = 100
  c.eval_every = 500
  c.checkpoint_every = 500
  c.keep_checkpoints = 2
  c.eval_batch_size = 1000

  # Warn when a class's share of the pseudo-labels or of the predictions on
  # the unlabeled images is below low x or above high x what the labeled set
  # (or data.class_prior) implies (mnist_ten/shares.py).
  c.share_warn = ml_collections.ConfigDict(dict(low=1 / 3, high=2.0))

  c.init_from = ""          # a workdir whose latest weights initialise this run
  c.init_scope = "encoder"  # encoder | all | instance (its encoder as a bag model's instance encoder)
  c.freeze_encoder = False  # train the heads only (a linear probe on a pretrained encoder)
  # A two-stage config sets `pretrain` to a whole stage-1 config (see
  # configs/pretext.py); empty: one stage.
  c.pretrain = ml_collections.ConfigDict()
  # What a run evaluates, by name (see mnist_ten/evaluate.py): each entry is
  # {type (default: the name), every (default: eval_every; -1: at the end only),
  # options}; "vote" applies only to a method that votes. eval_report: the one
  # whose EMA test accuracy is the result ("auto": vote, else flip, else head,
  # else knn, else linear_probe).
  c.evals = ml_collections.ConfigDict({"head": {"every": 0}, "vote": {"every": 0}})
  c.eval_report = "auto"
  c.eval_median_of = 5  # results.json also reports the median of the last 5 evaluations
  c.plots = True  # a finished run draws its figures into WORKDIR/plots and TensorBoard
  # A finished run's workdir is reported from its results.json; True evaluates it again.
  c.reevaluate = False
  c.compilation_cache = ""  # JAX's compiled programs: "" $MNIST_TEN_CACHE/jax, a folder, or "off"

  c.knn = ml_collections.ConfigDict(dict(k=1))
  return c


def shorten(c, num_steps: int, batch_size: int = 0):
  """Turns `c` into a smoke run (the `quick` presets): `num_steps` steps with
  two log lines and checkpoints, one evaluation, optionally a smaller batch."""
  c.num_steps = num_steps
  c.log_every = c.checkpoint_every = num_steps // 2
  c.eval_every = num_steps
  if batch_size:
    c.batch_size = batch_size
  return c


def parse_arg(arg) -> Tuple[set, Dict[str, str]]:
  """'quick,model=mlp' -> ({'quick'}, {'model': 'mlp'})."""
  flags, options = set(), {}
  for part in filter(None, (p.strip() for p in (arg or "").split(","))):
    if "=" in part:
      key, value = part.split("=", 1)
      options[key.strip()] = value.strip()
    else:
      flags.add(part)
  return flags, options


# A later stage's model, data and seed are its first stage's (train.pretrain_config).
_SHARED_BY_STAGES = ("model", "data", "seed", "plots")


def override(config, text: str):
  """Sets one `key.path=value` in `config` as `--config.key.path=value` would:
  the value a Python literal (true/false for a switch), or a string;
  `...model=NAME` gives that model with its defaults (as the `model=NAME`
  preset)."""
  key, sep, value = text.partition("=")
  key, value = key.strip(), value.strip()
  if not sep or not key:
    raise ConfigError(f"override {text!r}: write it as key.path=value")
  *path, last = key.split(".")
  _, in_stage, below = ("." + key).rpartition(".pretrain.")  # the innermost stage's key
  if in_stage and below.split(".")[0] in _SHARED_BY_STAGES:
    raise ConfigError(f"override {text!r}: every stage takes model, data, seed and plots "
                      "from the last stage; set them without pretrain.")
  parent = config
  try:
    for part in path:
      parent = parent[part]
    old = parent[last]
  except (KeyError, AttributeError, TypeError):
    raise ConfigError(f"override {text!r}: the config has no key {key!r}") from None
  if last == "model" and isinstance(old, ml_collections.ConfigDict):
    parent[last] = model_config(value)
    return config
  if isinstance(old, str):
    parsed = value
  elif isinstance(old, bool):
    parsed = {"true": True, "1": True, "false": False, "0": False}.get(value.lower(), value)
  else:
    try:
      parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      parsed = value
  try:
    if parsed is None and old is not None:
      raise TypeError
    parent[last] = parsed
  except TypeError:
    raise ConfigError(f"override {text!r}: {key} must be {type(old).__name__}, "
                      f"got {parsed!r}") from None
  return config


def check_preset(name: str, flags: set, options: dict, known_flags=(), known_options=()):
  unknown = (flags - set(known_flags)) | (set(options) - set(known_options))
  if unknown:
    raise ConfigError(f"config {name}: unknown preset(s) {sorted(unknown)}; known: "
                      f"{sorted(set(known_flags) | {o + '=' for o in known_options})}")


def steps_per_epoch(config, num_labeled: int) -> int:
  """Steps that see `num_labeled` examples once, rounded up to whole dispatches."""
  steps = -(-num_labeled // config.batch_size)
  return -(-steps // config.steps_per_dispatch) * config.steps_per_dispatch


def resolve_epochs(config, num_labeled: int):
  """With `num_epochs` set: num_steps from it, and a log, an evaluation and
  a checkpoint once per epoch where those are 0 (in place; the saved config
  holds the steps)."""
  if not config.get("num_epochs"):
    return
  if config.num_epochs < 0:
    raise ConfigError(f"num_epochs must be >= 0 (0: num_steps counts), got {config.num_epochs}")
  epoch = steps_per_epoch(config, num_labeled)
  with config.unlocked():
    dispatch = config.steps_per_dispatch
    config.num_steps = max(1, int(round(config.num_epochs * epoch / dispatch))) * dispatch
    for key in ("log_every", "eval_every", "checkpoint_every"):
      if config[key] == 0:
        config[key] = epoch


def validate(config):
  """Checks values whose errors would otherwise surface deep inside training."""
  positive = ["num_steps", "steps_per_dispatch", "log_every", "eval_every",
              "checkpoint_every", "keep_checkpoints", "eval_batch_size"]
  for key in positive:
    if config[key] < 1:
      raise ConfigError(f"{key} must be >= 1, got {config[key]}")
  for key in ["num_steps", "log_every", "eval_every", "checkpoint_every"]:
    if config[key] % config.steps_per_dispatch:
      raise ConfigError(f"{key}={config[key]} must be a multiple of "
                        f"steps_per_dispatch={config.steps_per_dispatch}")
  if not 0.0 <= config.ema_decay < 1.0:
    raise ConfigError(f"ema_decay must be in [0, 1), got {config.ema_decay}")
  if not 0.0 <= config.label_smoothing < 1.0:
    raise ConfigError(f"label_smoothing must be in [0, 1), got {config.label_smoothing}")
  if config.eval_median_of < 1:
    raise ConfigError(f"eval_median_of must be >= 1, got {config.eval_median_of}")
  if not (0.0 <= config.share_warn.low <= 1.0 <= config.share_warn.high):
    raise ConfigError(f"share_warn: needs 0 <= low <= 1 <= high, got low="
                      f"{config.share_warn.low}, high={config.share_warn.high}")
  if config.init_scope not in ("encoder", "all", "instance"):
    raise ConfigError(f"init_scope must be 'encoder', 'all' or 'instance', got "
                      f"{config.init_scope!r}")


# Keys added with config.evals: a saved config without them gets the defaults,
# and they may differ on resume (they change what is evaluated, not trained).
EVAL_KEYS = ("evals", "eval_report", "eval_median_of", "plots")


# Keys added later with defaults that compute what runs before them computed.
ADDED_KEYS = ("reevaluate", "num_epochs", "share_warn", "compilation_cache", "rotation_aux")
ADDED_DATA_KEYS = ("num_unlabeled", "standardize", "synthetic", "bags", "class_prior",
                   "labeled_file", "labeled_count", "dir", "image_size", "color",
                   "test_fraction", "test_seed", "pipeline", "host_augment")
# Method options added since, at the value that reproduces the runs before them.
ADDED_METHOD_KEYS = {"fixmatch": {"weak_pass": "joint", "align_batches": 1},
                     "mixmatch": {"align_batches": 1},
                     "propagate": {"consistency_rule": "fixmatch"}}


def from_saved(saved: dict) -> ml_collections.ConfigDict:
  """A run's config.json as a ConfigDict, with the keys added since it was
  written at their defaults (runs from before `config.evals` evaluated with
  `eval_with`)."""
  config = ml_collections.ConfigDict(saved)
  defaults = base()
  stage = config
  while stage is not None:  # every stage of a multi-stage run
    with stage.unlocked():
      for key in (*EVAL_KEYS, *ADDED_KEYS):
        if key not in stage:
          stage[key] = defaults[key]
      for key in ADDED_DATA_KEYS:
        if "data" in stage and key not in stage.data:
          stage.data[key] = defaults.data[key]
      for section, added in ADDED_METHOD_KEYS.items():
        if section in stage:
          with stage[section].unlocked():
            for key, value in added.items():
              if key not in stage[section]:
                stage[section][key] = value
      if "eval_with" in stage:
        if stage.eval_with == "knn":
          stage.evals = ml_collections.ConfigDict({"knn": {"every": 0}})
        del stage["eval_with"]
    stage = stage.pretrain if stage.get("pretrain") and stage.pretrain.get("method") else None
  return config


def to_json(config) -> str:
  return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)


def differences(saved: dict, current: dict, ignore=(), prefix="", newer_keys=False) -> list:
  """Dotted keys whose values differ between two config dicts (`newer_keys`:
  not the keys a non-empty section of `saved` lacks, added to the code after
  it was written; an empty saved section, unset then, differs)."""
  out = []
  for key in sorted(set(saved) | set(current)):
    path = prefix + key
    # A key ignored at the top is ignored in every stage (pretrain.pretrain.KEY).
    if re.sub(r"^(pretrain\.)+", "", path) in ignore or (newer_keys and saved and
                                                         key not in saved):
      continue
    a, b = saved.get(key, "<absent>"), current.get(key, "<absent>")
    if isinstance(a, dict) and isinstance(b, dict):
      out += differences(a, b, ignore, path + ".", newer_keys)
    elif json.dumps(a, default=str) != json.dumps(b, default=str):
      out.append(f"{path}: {a!r} -> {b!r}")
  return out
