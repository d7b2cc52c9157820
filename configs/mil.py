"""Multiple-instance learning on bags of MNIST digits (Ilse, Tomczak & Welling,
"Attention-based Deep Multiple Instance Learning", ICML 2018).

A bag holds round(N(10, 2)) digits; it is positive when one of them is a 9.
Training bags come from the train split, 1,000 test bags from the test split,
half of each positive, drawn afresh for each data.label_seed (the draw of
bags). Each bag's instances go through the paper's LeNet (conv20 5x5, pool,
conv50 5x5, pool, dense 500), then a masked pooling over the bag, then a
linear head. Sizes: --config.data.bags.mean=..., .std, .target, .num_test.

Presets (comma-separated):
  pooling=NAME   attention (default), gated, max or mean (models.POOLINGS)
  bags=N         training bags (default 100)
  pretrained     the instance encoder is the LeNet (and head) of another run on
                 the unlabeled MNIST images, kept frozen; each instance enters
                 the pooling as its 10 digit probabilities:
                 --config.init_from=WORKDIR (e.g. a configs/default.py run with
                 model=lenet); the pooling and head train on the bags
  quick          a smoke run
Results: docs/results.md ("Multiple-instance learning").
"""
from mnist_ten import config as config_lib

POOLINGS = ("attention", "gated", "max", "mean")


def get_config(arg=None):
  flags, options = config_lib.parse_arg(arg)
  config_lib.check_preset("mil", flags, options, ("pretrained", "quick"), ("pooling", "bags"))
  pooling = options.get("pooling", "attention")
  if pooling not in POOLINGS:
    raise config_lib.ConfigError(f"mil: pooling must be one of {', '.join(POOLINGS)}, "
                                 f"got {pooling!r}")
  try:
    num_bags = int(options.get("bags", 100))
  except ValueError:
    raise config_lib.ConfigError(f"mil: bags={options['bags']!r} must be a whole "
                                 "number of training bags") from None
  c = config_lib.base()
  c.name = "mil" + (f":{arg}" if arg else "")
  c.data.bags = dict(num_train=num_bags, num_test=1000, mean=10.0, std=2.0, target=9)
  c.data.labels_per_class = -1  # every training bag's label; instance labels never
  if "pretrained" in flags:
    # The LeNet other configs train (model=lenet), as a frozen instance encoder.
    instance = config_lib.model_config("lenet").to_dict()
    c.init_scope = "instance"
  else:
    instance = dict(name="lenet", batch_norm=False, channels=(20, 50), width=500,
                    kernel_grad="auto")
  # Pretrained, each instance enters the pooling as the frozen classifier's
  # 10 digit probabilities: its 128 ReLU features let the attention fit 50
  # bags by cues that do not carry to the test bags (docs/results.md).
  c.model = config_lib.model_config("mil", instance=instance, pooling=pooling,
                                    freeze_instance="pretrained" in flags,
                                    instance_classes=10 if "pretrained" in flags else 0)
  c.method = "supervised"
  c.augment = dict(labeled="")
  # The paper's optimiser: Adam, 5e-4, L2 1e-4. Bags per step and steps are
  # ours (the paper: one bag a step, early stopping on a validation set).
  c.optim.name = "adam"
  c.optim.lr = 5e-4
  c.optim.weight_decay = 1e-4
  c.optim.schedule = "constant"
  if "pretrained" in flags:
    c.optim.lr = 1e-2  # only the pooling and the head train: a small model, a larger step
  c.batch_size = 8
  c.num_steps = 600
  c.log_every, c.eval_every, c.checkpoint_every = 100, 600, 600
  c.eval_batch_size = 100
  c.evals = {"mil": {}}
  if "quick" in flags:
    config_lib.shorten(c, num_steps=20)
    c.data.bags.num_test = 100
  return c
