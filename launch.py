"""Runs one experiment: python launch.py --config=configs/NAME.py[:preset] [--workdir=DIR].

Overrides: --config.optim.lr=0.01 --config.data.label_seed=3 ...
Everything happens in mnist_ten.train.train_and_evaluate; this file only
parses flags and turns user errors into one clear line.
"""
import datetime
import pathlib
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from mnist_ten import errors
from mnist_ten import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:preset]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory; default: a new runs/NAME-TIME. "
                               "An existing workdir of the same config is resumed.")
flags.mark_flags_as_required(["config"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.get_absl_handler().addFilter(train.OwnLogs())
  config = _CONFIG.value
  workdir = _WORKDIR.value
  if workdir is None:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    workdir = pathlib.Path("runs") / f"{(config.name or 'run').replace(':', '-').replace(',', '-')}-{stamp}"
  logging.info("workdir: %s", workdir)
  try:
    train.train_and_evaluate(config, workdir)
  except errors.MnistTenError as e:
    logging.error("%s", e)
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
