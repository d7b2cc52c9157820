"""FlexMatch (Zhang et al. 2021): FixMatch with per-class thresholds that
rise with each class's learning effect (mnist_ten/methods/flexmatch.py).
Everything else is configs/fixmatch.py's: the same batches, augmentations,
optimizer and 2,000 steps.

Presets: quick (a smoke run), model=NAME.
"""
from configs import fixmatch as fixmatch_config
from mnist_ten.methods.flexmatch import FlexMatch


def get_config(arg=None):
  # tau is fixmatch.threshold (0.95); warm-up and the convex mapping as the paper and USB.
  return fixmatch_config.successor("flexmatch", arg, FlexMatch.OPTIONS)
