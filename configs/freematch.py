"""FreeMatch (Wang et al. 2023): FixMatch with self-adaptive global and
per-class thresholds and the self-adaptive fairness term
(mnist_ten/methods/freematch.py). Everything else is configs/fixmatch.py's:
the same batches, augmentations, optimizer and 2,000 steps; its fixed
threshold is unused.

Presets: quick (a smoke run), model=NAME.
"""
from configs import fixmatch as fixmatch_config
from mnist_ten import config as config_lib


def get_config(arg=None):
  flags, options = config_lib.parse_arg(arg)
  config_lib.check_preset("freematch", flags, options, ("quick",), ("model",))
  c = fixmatch_config.get_config(arg)
  c.name = "freematch" + (f":{arg}" if arg else "")
  c.method = "freematch"
  # USB's classic-CV values: EMA momentum 0.999, fairness weight 0.001.
  c.freematch = dict(momentum=0.999, fairness=0.001)
  if "quick" in flags:
    # Its thresholds start low (every pseudo-label counts at first): from
    # scratch, 40 steps at full weight end in one class. A smoke run ramps up.
    c.fixmatch.rampup_steps = c.num_steps
  return c
