"""The project's best recipe for one label per class: graph propagation, then
self-training, in rounds.

Round 1 (WORKDIR/pretrain): the labels of the labeled examples are propagated
over a nearest-neighbour graph of hand-made, label-free features (deskewed
pixels and histograms of oriented gradients) by Poisson learning, and groups
of images the graph's edges say belong elsewhere are moved there; a residual
CNN is trained on the labeled examples and the propagated pseudo-labels, with
strong augmentation. Each later round rebuilds the graph with the previous
round's encoder features added, propagates the labels again, and continues
training from the previous round's weights.

Presets: rounds=N (1 to 5, default 2), quick, model=NAME (default resnet).
How it works, the measurements behind each setting and what was tried and
not kept: docs/default_recipe.md; results: docs/results.md.
"""
from mnist_ten import config as config_lib

FEATURES = "hog(cell=4, dim=64)|hog(cell=7, dim=32)|deskew(dim=64)"
LABELED = "affine(rotate=15, shift=0.1, scale=0.15, shear=15, elastic=1)"
# Milder than FixMatch's strong view: the network must fit the pseudo-labels
# (no cutout), while deformations keep it from memorising the graph's mistakes.
STRONG = "affine(rotate=10, shift=0.1, scale=0.1, shear=10, elastic=1)"
WEAK = "affine(rotate=5, shift=0.1)"
ROUNDS = 2
# The residual CNN fits the propagated labels better than the LeNet; a third
# round gains too little for its time (docs/default_recipe.md).
MODEL = "resnet"
FIRST_STEPS, FIRST_LR = 1200, 0.05  # round 1, from scratch
LATER_STEPS, LATER_LR = 800, 0.03  # every later round, from the round before


def _round(model, features, num_steps, lr):
  c = config_lib.base()
  c.method = "propagate"
  c.model = model
  c.batch_size = 16
  # keep=1.0: every pseudo-label; the least confident are the images near the
  # class boundaries, which the network most needs to see.
  # vote=10: the final model is the network plus the graph's vote (each test
  # image takes the pseudo-labels of its 10 nearest training images).
  # refine=2.0: groups of images that Poisson learning gave to the wrong class
  # move when their edges say so clearly (graph.refine_labels).
  # reseed=0.5: a class left with under half the share the labeled set
  # implies (its one example atypical, its images handed to a neighbour
  # class) takes back one side of that class's weakest cut (graph.
  # reseed_vanished). Random draws never trigger it.
  # Measurements for all four: docs/default_recipe.md.
  c.propagate = dict(features=features, k=10, iterations=600, keep=1.0, mu=8,
                     lambda_u=1.0, agree_with_init=False, consistency=0.0, threshold=0.95,
                     consistency_rule="fixmatch",
                     vote=10, refine=2.0, reseed=0.5, size_bounds=())
  c.augment.labeled = LABELED
  c.augment.strong = STRONG
  # Used only with propagate.consistency > 0, which is off: the network had
  # already learned the graph's mistakes (docs/default_recipe.md).
  c.augment.weak = WEAK
  c.optim.lr = lr
  c.num_steps = num_steps
  c.log_every = 100
  c.eval_every = 500
  c.checkpoint_every = 250
  return c


def get_config(arg=None):
  flags, options = config_lib.parse_arg(arg)
  config_lib.check_preset("default", flags, options, ("quick",), ("rounds", "model"))
  rounds = options.get("rounds", str(ROUNDS))
  if not rounds.isdigit() or not 1 <= int(rounds) <= 5:
    raise config_lib.ConfigError(f"default: rounds must be 1 to 5, got {rounds!r}")
  model = config_lib.model_config(options.get("model", MODEL))
  if model.name == "resnet":
    # XLA's own kernel gradient is the faster one at this recipe's 144 images
    # per step; im2col (`auto`) pays only for larger batches (docs/speed.md).
    model.kernel_grad = "xla"
  # Each later round is a stage whose `pretrain` is the round before: it
  # starts from that round's weights and adds its encoder to the graph.
  c = _round(model, FEATURES, FIRST_STEPS, FIRST_LR)
  for _ in range(int(rounds) - 1):
    later = _round(model, FEATURES + "|encoder(dim=64)", LATER_STEPS, LATER_LR)
    later.pretrain = c
    later.init_scope = "all"
    c = later
  c.name = "default" + (f":{arg}" if arg else "")
  if "quick" in flags:
    c.data.num_unlabeled = 5000  # the graph and its features over 5,000 images: seconds
    stage = c
    while stage.get("method"):
      config_lib.shorten(stage, num_steps=20, batch_size=8)
      # A cheap graph: the smoke run checks the plumbing, not the features.
      stage.propagate.features = stage.propagate.features.replace(FEATURES, "deskew(dim=16)")
      stage.propagate.iterations = 50
      stage = stage.pretrain
  return c
