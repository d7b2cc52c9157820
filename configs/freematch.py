"""FreeMatch (Wang et al. 2023): FixMatch with self-adaptive global and
per-class thresholds and the self-adaptive fairness term
(mnist_ten/methods/freematch.py). Everything else is configs/fixmatch.py's:
the same batches, augmentations, optimizer and 2,000 steps; its fixed
threshold is unused.

Presets: quick (a smoke run), model=NAME.
"""
from configs import fixmatch as fixmatch_config
from mnist_ten.methods.freematch import FreeMatch


def get_config(arg=None):
  # USB's classic-CV values: EMA momentum 0.999, fairness weight 0.001.
  return fixmatch_config.successor("freematch", arg, FreeMatch.OPTIONS)
