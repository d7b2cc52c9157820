"""The quadrant toy task of the course exercise: 2-D points uniform in
[-1, 1]^2, labelled by their quadrant (0: x<0,y<0; 1: x<0,y>=0; 2: x>=0,y<0;
3: x>=0,y>=0). Sizes and seed: --config.data.synthetic.num_train=...

Presets (comma-separated):
  mlp1           an MLP with one hidden layer (default), every train label
  mlp2           two hidden layers
  semi=METHOD    one labeled point per class, the others unlabeled, through
                 propagate, entropy_min, fixmatch or mixmatch (no image
                 augmentations: points have none)
  quick          a smoke run
Results: docs/results.md.
"""
import importlib

from mnist_ten import config as config_lib

SEMI = ("propagate", "entropy_min", "fixmatch", "mixmatch")


def get_config(arg=None):
  flags, options = config_lib.parse_arg(arg)
  config_lib.check_preset("quadrants", flags, options, ("mlp1", "mlp2", "quick"), ("semi",))
  c = config_lib.base()
  c.name = "quadrants" + (f":{arg}" if arg else "")
  c.data.name = "quadrants"
  c.data.synthetic = dict(num_train=4000, num_test=4000, seed=0)
  c.data.standardize = True  # centred inputs: the boundaries pass through 0
  c.model = config_lib.model_config("mlp", widths=(64, 64) if "mlp2" in flags else (64,))
  c.method = "supervised"
  c.data.labels_per_class = -1
  c.batch_size = 64
  c.num_steps = 3000
  c.optim.name = "adam"
  c.optim.lr = 1e-2
  c.optim.weight_decay = 0.0
  c.log_every, c.eval_every, c.checkpoint_every = 250, 500, 1000
  c.eval_batch_size = 1000
  # Points have nothing to augment: every view a method may ask for is the point itself.
  c.augment = dict(labeled="", weak="", strong="")
  semi = options.get("semi")
  if semi is not None:
    if semi not in SEMI:
      raise config_lib.ConfigError(f"quadrants: semi must be one of {', '.join(SEMI)}, "
                                   f"got {semi!r}")
    c.method = semi
    c.data.labels_per_class = 1
    c.batch_size = 4  # the 4 labeled points
    # The method's settings as its own config ships them, on the points as they are.
    shipped = importlib.import_module(f"configs.{'default' if semi == 'propagate' else semi}")
    stage = shipped.get_config()
    c[semi] = stage[semi].to_dict()
    if semi == "propagate":
      # The graph over the points themselves; no vote: the network alone.
      c.propagate.update(features="pixels", refine=0.0, vote=0)
  if "quick" in flags:
    config_lib.shorten(c, num_steps=100)
  return c
