"""SoftMatch (Chen et al. 2023): FixMatch with truncated-Gaussian weights
instead of a threshold, and uniform alignment (mnist_ten/methods/softmatch.py).
Everything else is configs/fixmatch.py's: the same batches, augmentations,
optimizer and 2,000 steps; its fixed threshold is unused.

Presets: quick (a smoke run), model=NAME.
"""
from configs import fixmatch as fixmatch_config
from mnist_ten import config as config_lib


def get_config(arg=None):
  flags, options = config_lib.parse_arg(arg)
  config_lib.check_preset("softmatch", flags, options, ("quick",), ("model",))
  c = fixmatch_config.get_config(arg)
  c.name = "softmatch" + (f":{arg}" if arg else "")
  c.method = "softmatch"
  # The paper's and USB's: EMA momentum 0.999, n_sigma 2.
  c.softmatch = dict(momentum=0.999, n_sigma=2.0)
  if "quick" in flags:
    # Its weights start at 1 (every pseudo-label counts at first): from
    # scratch, 40 steps at full weight end in one class. A smoke run ramps up.
    c.fixmatch.rampup_steps = c.num_steps
  return c
