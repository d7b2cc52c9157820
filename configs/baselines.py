"""The seed projects' fully supervised baselines, trained exactly as they were.

Presets (one of the systems, then options, comma-separated):
  fashion_mlp    Fashion-MNIST, MLP 784-512-512-10 (a blog's PyTorch quick-start:
                 10 epochs, Adam 1e-3, batch 64, cross-entropy, ReLU; 87.6% there)
  fashion_mlp64  the same with MLP 784-64-10 (87.1% there)
  fashion_cnn    the same with conv16 5x5, pool, conv32 7x7, pool, linear (90.7% there)
  course_mlp1    MNIST, an MLP with one hidden layer on flattened images standardised
                 with the train images' mean and std; logs the course's
                 "[epoch][batch] -> x% training accuracy y% testing accuracy"
  course_mlp2    the same with two hidden layers (goal >= 98.0%)
  epochs=N       train N epochs instead
  quick          a smoke run of a few hundred steps
Every label is used; `run_seeds.py` varies the initialisation seed.
Results: docs/results.md.
"""
from mnist_ten import config as config_lib

SYSTEMS = ("fashion_mlp", "fashion_mlp64", "fashion_cnn", "course_mlp1", "course_mlp2")
MODELS = {"fashion_mlp": ("mlp", dict(widths=(512, 512))),
          "fashion_mlp64": ("mlp", dict(widths=(64,))),
          "fashion_cnn": ("small_cnn", {}),
          "course_mlp1": ("mlp", dict(widths=(512,))),
          "course_mlp2": ("mlp", dict(widths=(512, 256)))}


def get_config(arg=None):
  flags, options = config_lib.parse_arg(arg)
  config_lib.check_preset("baselines", flags, options, (*SYSTEMS, "quick"), ("epochs",))
  systems = [s for s in SYSTEMS if s in flags]
  if len(systems) != 1:
    raise config_lib.ConfigError(f"baselines: name one system of {', '.join(SYSTEMS)} "
                                 f"(e.g. configs/baselines.py:fashion_cnn), got {systems}")
  system = systems[0]
  c = config_lib.base()
  c.name = f"baselines:{arg}"
  c.method = "supervised"
  name, kwargs = MODELS[system]
  c.model = config_lib.model_config(name, **kwargs)
  c.data.labels_per_class = -1
  c.augment.labeled = ""  # the seed projects trained on the images as they are
  c.ema_decay = 0.0       # and reported the weights they trained
  c.optim.name = "adam"
  c.optim.lr = 1e-3
  c.optim.schedule = "constant"
  c.optim.weight_decay = 0.0
  c.log_every = c.eval_every = c.checkpoint_every = 0  # once per epoch
  if system.startswith("fashion"):
    c.data.name = "fashion_mnist"
    c.batch_size = 64
    c.num_epochs = 10.0
  else:
    c.data.standardize = True
    c.batch_size = 100
    c.num_epochs = 20.0
    # Decayed to 0 by the end: the final model, not a snapshot of a noisy
    # constant-rate run (98.01 +- 0.33%, min 97.63, at a constant 1e-3).
    c.optim.schedule = "cosine"
    # The course's printout: train and test accuracy on a few batches, 5 times an epoch.
    c.evals.batches = dict(every=120, batches=5)
  if "epochs" in options:
    c.num_epochs = float(options["epochs"])
  if "quick" in flags:
    c.num_epochs = 0.1 if system.startswith("fashion") else 0.2
    if "batches" in c.evals:
      c.evals.batches.every = 60
  return c
