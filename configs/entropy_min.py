"""Entropy minimisation: the worked example of a new method (docs/extending.md).

Presets: quick, model=NAME.
"""
from mnist_ten import config as config_lib


def get_config(arg=None):
  flags, options = config_lib.parse_arg(arg)
  config_lib.check_preset("entropy_min", flags, options, ("quick",), ("model",))
  c = config_lib.base()
  c.name = "entropy_min" + (f":{arg}" if arg else "")
  c.method = "entropy_min"
  c.model = config_lib.model_config(options.get("model", "lenet"))
  c.batch_size = 32
  c.entropy_min = dict(mu=4, lambda_u=0.3, rampup_steps=400)
  c.augment.labeled = "affine(rotate=15, shift=0.1, scale=0.15, shear=15, elastic=1)"
  c.num_steps = 1000
  if "quick" in flags:
    config_lib.shorten(c, num_steps=20, batch_size=8)
  return c
