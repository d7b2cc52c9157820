"""The evaluation protocol as code: one config over several label draws.

    python experiments/run_seeds.py --config=configs/supervised.py --seeds=0,1,2,3,4 \
        --out=experiments/results/supervised [--config.optim.lr=0.05 ...]

Each seed runs in OUT/seed_N (data.label_seed = seed = N). Rerunning skips
finished seeds and resumes unfinished ones from their checkpoints, so a long
table can be built over several sittings: the table holds every finished seed
in OUT, not only those of this call. Each run's results.json and config.json
are kept in git (.gitignore), its checkpoints and logs are not. `{seed}` in
--config.init_from is replaced by each seed, so a finished earlier stage can be
reused per draw, e.g.
--config.init_from=experiments/results/pretext/seed_{seed}/pretrain.
Writes OUT/table.md and OUT/table.csv: per-seed accuracy of the final (EMA)
model and its lowest class, mean ± std, min, max, and times.
"""
import pathlib
import sys
from typing import List

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from experiments import report  # pylint: disable=g-import-not-at-top
from mnist_ten import errors  # pylint: disable=g-import-not-at-top
from mnist_ten import train  # pylint: disable=g-import-not-at-top

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_SEEDS = flags.DEFINE_string("seeds", "0,1,2,3,4", "Label seeds: '0,1,2' or '0-4'.")
_OUT = flags.DEFINE_string("out", None, "Directory for the runs and the table.")


def parse_seeds(text: str):
  """'0-4,7' -> [0, 1, 2, 3, 4, 7]."""
  seeds = []
  try:
    for part in text.split(","):
      if "-" in part:
        lo, hi = part.split("-")
        seeds += range(int(lo), int(hi) + 1)
      elif part.strip():
        seeds.append(int(part))
  except ValueError:
    raise errors.ConfigError(f"--seeds={text!r}: give label seeds as 0-4 or 0,3,7") from None
  return seeds


def config_for(config, label_seed: int, seed: int = None):
  """`config` for one label draw: data.label_seed, the initialisation seed
  (the draw's own unless given) and `{seed}` in init_from set."""
  out = config.copy_and_resolve_references()
  out.data.label_seed = label_seed
  out.seed = label_seed if seed is None else seed
  out.init_from = out.init_from.replace("{seed}", str(label_seed))
  return out


def check_finished(workdir: pathlib.Path, config):
  """Refuses to reuse a finished run of another config: its numbers would
  join this table as if this config had made them."""
  diffs = train.saved_differences(workdir, config, finished=True)
  if diffs:
    raise errors.WorkdirError(
        f"{str(workdir)!r} holds a finished run of a different config ({diffs}); "
        "use another --out, or delete that folder to run it again")


def run(config, seeds, out) -> List[dict]:
  """Runs (or resumes, or skips when finished) `config` for each label seed in
  OUT/seed_N, writes OUT/table.md and OUT/table.csv, returns the results."""
  out = pathlib.Path(out)
  for seed in seeds:  # a refusal before hours of training, not after
    if report.load_results(out / f"seed_{seed}") is not None:
      check_finished(out / f"seed_{seed}", config_for(config, seed))
  rows = []
  for seed in seeds:
    workdir = out / f"seed_{seed}"
    done = report.load_results(workdir)
    if done is None:
      # A "seed" draws the labeled examples and the initialisation/batches, as
      # in the FixMatch protocol; with every label used, only the latter varies.
      config_n = config_for(config, seed)
      logging.info("label seed %d -> %s", seed, workdir)
      train.train_and_evaluate(config_n, workdir)
      done = report.load_results(workdir)  # with every stage's time counted
    else:
      logging.warning("label seed %d: finished earlier in %s (test accuracy %.4f), skipped; "
                      "delete that folder to run it again", seed, workdir,
                      done["test_accuracy_ema"])
    rows.append(done)
  # The table holds every finished draw in OUT, those of earlier sittings too.
  finished = {r["label_seed"]: r for r in filter(None, map(report.load_results,
                                                           out.glob("seed_*")))}
  md, csv = report.seed_table([finished[s] for s in sorted(finished)])
  (out / "table.md").write_text(md)
  (out / "table.csv").write_text(csv)
  return rows


def main(argv):
  del argv
  logging.get_absl_handler().addFilter(train.OwnLogs())
  out = pathlib.Path(_OUT.value)
  run(_CONFIG.value, parse_seeds(_SEEDS.value), out)
  print((out / "table.md").read_text())


if __name__ == "__main__":
  # Required here only: experiments/mil.py imports `run` and shares --seeds.
  flags.mark_flags_as_required(["config", "out"])
  app.run(errors.guard(main))
