"""FlexMatch (Zhang et al. 2021): FixMatch with per-class thresholds that
rise with each class's learning effect (mnist_ten/methods/flexmatch.py).
Everything else is configs/fixmatch.py's: the same batches, augmentations,
optimizer and 2,000 steps.

Presets: quick (a smoke run), model=NAME.
"""
from configs import fixmatch as fixmatch_config
from mnist_ten import config as config_lib


def get_config(arg=None):
  flags, options = config_lib.parse_arg(arg)
  config_lib.check_preset("flexmatch", flags, options, ("quick",), ("model",))
  c = fixmatch_config.get_config(arg)
  c.name = "flexmatch" + (f":{arg}" if arg else "")
  c.method = "flexmatch"
  # tau is fixmatch.threshold (0.95); warm-up and the convex mapping as the paper and USB.
  c.flexmatch = dict(warmup=True, mapping="convex")
  if "quick" in flags:
    # Its thresholds start low (every pseudo-label counts at first): from
    # scratch, 40 steps at full weight end in one class. A smoke run ramps up.
    c.fixmatch.rampup_steps = c.num_steps
  return c
