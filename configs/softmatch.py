"""SoftMatch (Chen et al. 2023): FixMatch with truncated-Gaussian weights
instead of a threshold, and uniform alignment (mnist_ten/methods/softmatch.py).
Everything else is configs/fixmatch.py's: the same batches, augmentations,
optimizer and 2,000 steps; its fixed threshold is unused.

Presets: quick (a smoke run), model=NAME.
"""
from configs import fixmatch as fixmatch_config
from mnist_ten.methods.softmatch import SoftMatch


def get_config(arg=None):
  # The paper's and USB's: EMA momentum 0.999, n_sigma 2.
  return fixmatch_config.successor("softmatch", arg, SoftMatch.OPTIONS)
