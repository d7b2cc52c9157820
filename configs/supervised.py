"""Supervised baseline: train on the labeled examples only, with augmentation.

Presets (after the colon, comma-separated):
  quick      a smoke run that finishes in well under 2 minutes on 2 CPU cores
  all        every one of the 60,000 train labels (the fully supervised reference)
  fashion    Fashion-MNIST with every label: the residual CNN at twice the width, flips
             and padded crops, 15 epochs, tested with each image and its mirror (the
             project's best fully supervised Fashion-MNIST; the seed blog's: baselines.py)
  model=NAME any registered model (mlp, small_cnn, lenet, resnet) with its defaults
             (fashion,model=resnet: the narrower default widths)
"""
from mnist_ten import config as config_lib


def get_config(arg=None):
  flags, options = config_lib.parse_arg(arg)
  config_lib.check_preset("supervised", flags, options, ("quick", "all", "fashion"), ("model",))
  c = config_lib.base()
  c.name = "supervised" + (f":{arg}" if arg else "")
  c.method = "supervised"
  # From 10 images the LeNet-sized CNN generalises far better than the
  # residual CNN, which fits the 10 images and nothing else; with every label
  # the residual CNN is the stronger one (docs/results.md).
  every_label = "all" in flags or "fashion" in flags
  default_model = "resnet" if every_label else "lenet"
  c.model = config_lib.model_config(options.get("model", default_model))
  c.batch_size = 64
  c.num_steps = 1000
  c.optim.lr = 0.03
  c.augment.labeled = "affine(rotate=15, shift=0.1, scale=0.15, shear=15, elastic=1)"
  if every_label:
    # ~5 epochs of 60k images (results: docs/results.md).
    c.data.labels_per_class = -1
    c.batch_size = 128
    c.num_steps = 2400
    c.optim.lr = 0.1
    c.augment.labeled = "affine(rotate=10, shift=0.1, scale=0.1, shear=10)"
    c.log_every = 200
    c.eval_every = 800
    c.checkpoint_every = 400
  if "fashion" in flags:
    c.data.name = "fashion_mnist"
    # Clothes keep their label under a mirror image; digits' rotations and
    # shears do not describe how garments vary, padded crops do.
    c.augment.labeled = "hflip|crop(pad=2)"
    # At (16, 32, 64) and 12 epochs: 92.05%, shirts against tops and coats
    # the most errors (docs/results.md).
    if "model" not in options:
      c.model.widths = (32, 64, 128)
    c.num_epochs = 15.0
    c.log_every = c.eval_every = c.checkpoint_every = 0  # once per epoch
    # Mirror-averaged predictions at the end only: the per-epoch curve is the head's.
    c.evals.flip = {"every": -1}
  if "quick" in flags:
    c.num_epochs = 0.0
    config_lib.shorten(c, num_steps=60)
  return c
