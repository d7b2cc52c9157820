"""The rotation/flip pretext task, then transfer to the labeled examples.

Stage 1 (in WORKDIR/pretrain): predict which of 8 transforms (4 rotations x
optional flip) was applied to unlabeled images; monitored by nearest-neighbour
accuracy in feature space. Stage 2: the encoder is transferred and trained on
the labeled examples with `transfer`:
  head       the encoder is frozen; a new linear head is trained (a linear probe)
  full       everything is fine-tuned
  alternate  supervised steps alternate with pretext steps

Presets: transfer=head|full|alternate (default full), quick, model=NAME.
Reuse a finished stage 1: --config.init_from=OTHER_WORKDIR/pretrain.

The pretext task can also train jointly with any semi-supervised method, as
an auxiliary loss (S4L; ReMixMatch): --config.rotation_aux.weight=0.5 on
that method's config (docs/methods.md). Which use works best (draws 0-2,
docs/results.md): as a stage before transfer it ends at 62.89 +- 3.01%
(transfer=full), no better than supervised alone; as an auxiliary loss in
both rounds of configs/default.py it gives 99.05 +- 0.15% against 99.13 +-
0.12% without it: the pretext task lifts neither.
"""
from mnist_ten import config as config_lib

AUGMENT = "affine(rotate=10, shift=0.1, scale=0.1, shear=10)"


def get_config(arg=None):
  flags, options = config_lib.parse_arg(arg)
  config_lib.check_preset("pretext", flags, options, ("quick",), ("transfer", "model"))
  transfer = options.get("transfer", "full")
  if transfer not in ("head", "full", "alternate"):
    raise config_lib.ConfigError(f"pretext: transfer must be head, full or alternate, "
                                 f"got {transfer!r}")
  model = config_lib.model_config(options.get("model", "lenet"))

  stage1 = config_lib.base()
  stage1.method = "rotation"
  stage1.model = model
  stage1.batch_size = 128
  stage1.augment.labeled = AUGMENT
  stage1.optim.lr = 0.05
  stage1.num_steps = 2000
  stage1.evals = {"knn": {}}  # no head is trained yet: the nearest labeled example
  stage1.log_every = 100
  stage1.eval_every = 1000
  stage1.checkpoint_every = 500

  c = config_lib.base()
  c.name = "pretext" + (f":{arg}" if arg else "")
  c.method = "pretext_alternate" if transfer == "alternate" else "supervised"
  c.model = model
  c.pretrain = stage1
  c.freeze_encoder = transfer == "head"
  c.init_scope = "all" if transfer == "alternate" else "encoder"  # alternate keeps the pretext head
  c.batch_size = 64
  c.augment.labeled = AUGMENT
  c.label_smoothing = 0.1
  c.optim.lr = 0.01
  c.num_steps = 1000 if transfer != "alternate" else 2000
  c.eval_every = 500
  c.checkpoint_every = 500
  if "quick" in flags:
    for stage in (stage1, c):
      config_lib.shorten(stage, num_steps=20, batch_size=16)
  return c
