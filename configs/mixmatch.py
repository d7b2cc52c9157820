"""MixMatch (Berthelot et al. 2019): K augmentations, label guessing by
averaging, sharpening with temperature T, mixup with alpha, L2 on unlabeled
with a linear ramp-up of lambda_u, EMA evaluation.

Presets: quick (a smoke run), nomixup (the ablation without mixup), align
(ReMixMatch's distribution alignment of the guesses, against collapse),
model=NAME.
"""
from mnist_ten import config as config_lib


def get_config(arg=None):
  flags, options = config_lib.parse_arg(arg)
  config_lib.check_preset("mixmatch", flags, options, ("quick", "nomixup", "align"),
                          ("model",))
  c = config_lib.base()
  c.name = "mixmatch" + (f":{arg}" if arg else "")
  c.method = "mixmatch"
  c.model = config_lib.model_config(options.get("model", "lenet"))
  c.batch_size = 64
  c.mixmatch = dict(k=2, mu=1, temperature=0.5, alpha=0.75, lambda_u=75.0,
                    rampup_steps=500, mixup="nomixup" not in flags, align="align" in flags,
                    # The model marginal's memory in batches: 1, this batch's mean (98.2%
                    # over draws 0-2), beats ReMixMatch's 128 (73.5%, docs/results.md).
                    align_batches=1)
  c.augment.labeled = "affine(rotate=10, shift=0.1, scale=0.1, shear=10)"
  c.optim.name = "adam"
  c.optim.lr = 0.002
  c.optim.weight_decay = 0.0
  c.optim.schedule = "constant"
  c.num_steps = 2000
  c.log_every = 50
  c.eval_every = 500
  c.checkpoint_every = 250
  if "quick" in flags:
    config_lib.shorten(c, num_steps=40, batch_size=16)
    c.mixmatch.rampup_steps = 20
  return c
