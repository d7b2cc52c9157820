"""SimCLR contrastive pretraining, then the labeled examples.

Stage 1 (in WORKDIR/pretrain): two strongly augmented views of each unlabeled
image, projection MLP, NT-Xent with temperature. Then `probe`:
  linear     frozen encoder, a linear head trained on the labeled examples
  finetune   the whole network fine-tuned on the labeled examples
  knn        no second stage: each test image takes the class of the nearest
             labeled example in feature space
  propagate  the labels spread over a nearest-neighbour graph of the encoder's
             features (Poisson learning, `mnist_ten.graph`), then the whole
             network fine-tuned on the labeled examples and those pseudo-labels
             (method `propagate`, as in configs/default.py but with SimCLR's
             features as the only graph features)

Presets: probe=linear|finetune|knn|propagate (default linear), quick, model=NAME.
"""
from mnist_ten import config as config_lib

STRONG = ("affine(rotate=20, shift=0.15, scale=0.2, shear=15, elastic=1.5)|"
          "cutout(size=10)|contrast(lower=0.6, upper=1.4)|brightness(delta=0.2)")
PROBES = ("linear", "finetune", "knn", "propagate")
# probe=propagate: one label per class reaches few test images through the
# nearest labeled example, but the graph carries it along chains of near
# neighbours (docs/results.md). Deformations for the fine-tuning as in
# configs/default.py.
PROPAGATE_LABELED = "affine(rotate=15, shift=0.1, scale=0.15, shear=15, elastic=1)"
PROPAGATE_STRONG = "affine(rotate=10, shift=0.1, scale=0.1, shear=10, elastic=1)"


def get_config(arg=None):
  flags, options = config_lib.parse_arg(arg)
  config_lib.check_preset("simclr", flags, options, ("quick",), ("probe", "model"))
  probe = options.get("probe", "linear")
  if probe not in PROBES:
    raise config_lib.ConfigError(f"simclr: probe must be one of {', '.join(PROBES)}, "
                                 f"got {probe!r}")
  model = config_lib.model_config(options.get("model", "lenet"))

  stage1 = config_lib.base()
  stage1.method = "simclr"
  stage1.model = model
  stage1.batch_size = 256
  stage1.simclr = dict(projection=(128, 64), temperature=0.2)
  stage1.augment.strong = STRONG
  stage1.optim.name = "adamw"
  stage1.optim.lr = 0.002
  stage1.optim.weight_decay = 1e-4
  stage1.optim.warmup_steps = 100
  stage1.num_steps = 2000
  stage1.evals = {"knn": {}}  # no head is trained yet: the nearest labeled example
  stage1.log_every = 100
  stage1.eval_every = 1000
  stage1.checkpoint_every = 500
  name = "simclr" + (f":{arg}" if arg else "")

  if probe == "knn":
    c = stage1
    c.name = name
  elif probe == "propagate":
    c = config_lib.base()
    c.name = name
    c.method = "propagate"
    c.model = model
    c.pretrain = stage1
    c.batch_size = 16
    c.propagate = dict(features="encoder(dim=64)", k=10, iterations=600, keep=1.0, mu=8,
                       lambda_u=1.0, agree_with_init=False, consistency=0.0, threshold=0.95,
                       vote=0, refine=0.0)
    c.augment.labeled = PROPAGATE_LABELED
    c.augment.strong = PROPAGATE_STRONG
    c.optim.lr = 0.03
    c.num_steps = 800
    c.eval_every = 400
    c.checkpoint_every = 200
  else:
    c = config_lib.base()
    c.name = name
    c.method = "supervised"
    c.model = model
    c.pretrain = stage1
    c.freeze_encoder = probe == "linear"
    c.batch_size = 64
    c.augment.labeled = "affine(rotate=10, shift=0.1, scale=0.1, shear=10)"
    c.optim.lr = 0.01
    c.num_steps = 1000
    c.eval_every = 500
    c.checkpoint_every = 500
  if "quick" in flags:
    for stage in (stage1, c):
      config_lib.shorten(stage, num_steps=20, batch_size=16)
    if probe == "propagate":
      c.batch_size = 8
      c.propagate.iterations = 50
      c.data.num_unlabeled = 5000  # the graph over 5,000 images: seconds
  return c
