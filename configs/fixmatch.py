"""FixMatch (Sohn et al. 2020) with augmentations suited to the dataset.

Weak: small shifts and rotations. Strong: large affine, elastic deformation,
cutout, contrast/brightness (flips only where `data.hflip` allows them).

Presets: quick (a smoke run), align (distribution alignment of the weak
view's predictions, against collapse), model=NAME.
"""
from mnist_ten import config as config_lib

WEAK = "affine(rotate=5, shift=0.1)|hflip"
STRONG = ("affine(rotate=30, shift=0.2, scale=0.2, shear=20, elastic=1.5)|"
          "hflip|contrast(lower=0.5, upper=1.5)|brightness(delta=0.3)|cutout(size=12)")


def get_config(arg=None):
  flags, options = config_lib.parse_arg(arg)
  config_lib.check_preset("fixmatch", flags, options, ("quick", "align"), ("model",))
  c = config_lib.base()
  c.name = "fixmatch" + (f":{arg}" if arg else "")
  c.method = "fixmatch"
  c.model = config_lib.model_config(options.get("model", "lenet"))
  c.batch_size = 64
  c.fixmatch = dict(mu=7, threshold=0.95, lambda_u=1.0, rampup_steps=0, align="align" in flags,
                    # The model marginal's memory in batches (ReMixMatch: 128); 1, this
                    # batch's mean, is what docs/results.md measured.
                    align_batches=1,
                    # joint (as published), no_grad or separate: the last two skip
                    # the weak view's backward (mnist_ten/methods/fixmatch.py).
                    weak_pass="joint")
  c.augment.labeled = WEAK
  c.augment.weak = WEAK
  c.augment.strong = STRONG
  c.optim.lr = 0.03
  # FixMatch decays the rate as cos(7 pi k / 16 K): it ends at cos(7 pi / 16) ~ 0.2 of the peak.
  c.optim.final_lr_fraction = 0.2
  c.num_steps = 2000
  c.log_every = 50
  c.eval_every = 500
  c.checkpoint_every = 250
  if "quick" in flags:
    config_lib.shorten(c, num_steps=40, batch_size=16)
    c.fixmatch.mu = 2
  return c


def successor(method: str, arg, options: dict):
  """configs/fixmatch.py's run with method `method` (FlexMatch, FreeMatch,
  SoftMatch: the same batches, augmentations, optimizer and steps), its
  options in config[method]. Presets: quick, model=NAME."""
  flags, presets = config_lib.parse_arg(arg)
  config_lib.check_preset(method, flags, presets, ("quick",), ("model",))
  c = get_config(arg)
  c.name = method + (f":{arg}" if arg else "")
  c.method = method
  c[method] = dict(options)  # a copy: the method class keeps its defaults
  if "quick" in flags:
    # Their thresholds start low, or their weights at 1 (every pseudo-label
    # counts at first): from scratch, 40 steps at full weight end in one class.
    c.fixmatch.rampup_steps = c.num_steps
  return c
