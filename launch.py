"""Runs one experiment: python launch.py --config=configs/NAME.py[:preset] [--workdir=DIR].

Overrides: --config.optim.lr=0.01 --config.data.label_seed=3 ...
Several processes (hosts): --distributed (detected on TPU pods, SLURM, Open
MPI), or --coordinator_address=HOST:PORT --num_processes=N --process_id=I in
each, all with the same --workdir on a shared file system.
Everything happens in mnist_ten.train.train_and_evaluate; this file only
parses flags and turns user errors into one clear line (exit status 2).
"""
import datetime
import pathlib
import re
import sys

from absl import app
import jax
from absl import flags
from absl import logging
from ml_collections import config_flags

from mnist_ten import errors
from mnist_ten import parallel
from mnist_ten import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:preset]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory; default: a new runs/NAME-TIME. "
                               "An existing workdir of the same config is resumed.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Join a multi-process run whose "
                                  "cluster JAX detects (TPU pod slices, SLURM, Open MPI).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0, "
                                   "for a multi-process run JAX cannot detect.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0 to N-1.")
flags.mark_flags_as_required(["config"])


def _explain(e: Exception) -> str:
  """One line for a mistake in the config file, preset or overrides."""
  argv = sys.argv
  if isinstance(e, (flags.Error, errors.MnistTenError)):
    return str(e)
  if isinstance(e, OSError):  # the config file itself cannot be read
    config_arg = next((a for a in argv[1:] if a.startswith("--config=")), "--config")
    return f"cannot load {config_arg}: {str(e).splitlines()[-1].strip()}"
  # ml_collections reports an unknown override key as AttributeError("'key'\nDid you
  # mean ...?"): name the flag the user typed and keep the suggestion.
  bad = " ".join(a for a in argv[1:] if a.startswith("--config.")) or "--config"
  lines = [line.strip(" '\"") for line in str(e).encode().decode("unicode_escape").splitlines()]
  return f"bad config override {bad}: unknown or invalid key {' '.join(filter(None, lines))}"


_USER_ERRORS = (flags.Error, errors.MnistTenError, OSError, AttributeError, KeyError,
                TypeError, ValueError)


def _parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except _USER_ERRORS as e:
    errors.fail(_explain(e))


def main(argv):
  if len(argv) > 1:
    errors.fail(f"unexpected arguments: {argv[1:]}")
  logging.get_absl_handler().addFilter(train.OwnLogs())
  try:
    config = _CONFIG.value
    config.get("name")  # a config file that failed to load raises only when used
  except _USER_ERRORS as e:
    errors.fail(_explain(e))
  explicit = (_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  if _DISTRIBUTED.value or any(v is not None for v in explicit):
    try:
      parallel.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    except (RuntimeError, ValueError) as e:  # no cluster detected, coordinator unreachable
      errors.fail(f"cannot join the multi-process run: {str(e).splitlines()[0]}")
  workdir = _WORKDIR.value
  if workdir is None and jax.process_count() > 1:
    errors.fail("a multi-process run needs --workdir (the same shared folder in every process)")
  if workdir is None:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", config.name or "run")
    workdir = pathlib.Path("runs") / f"{name}-{stamp}"
  logging.info("workdir: %s", workdir)
  train.train_and_evaluate(config, workdir)


if __name__ == "__main__":
  app.run(errors.guard(main), flags_parser=_parse_flags)
