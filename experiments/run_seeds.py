"""The evaluation protocol as code: one config over several label draws.

    python experiments/run_seeds.py --config=configs/supervised.py --seeds=0,1,2,3,4 \
        --out=experiments/results/supervised [--config.optim.lr=0.05 ...]

Each seed runs in OUT/seed_N (data.label_seed = seed = N). Rerunning skips finished
seeds and resumes unfinished ones from their checkpoints, so a long table can
be built over several sittings. Writes OUT/table.md and OUT/table.csv: per-seed
accuracy of the final (EMA) model, mean ± std, min, max, and times.
"""
import pathlib
import sys

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
flags.mark_flags_as_required(["config", "out"])


def parse_seeds(text: str):
  seeds = []
  for part in text.split(","):
    if "-" in part:
      lo, hi = part.split("-")
      seeds += range(int(lo), int(hi) + 1)
    elif part.strip():
      seeds.append(int(part))
  return seeds


def main(argv):
  del argv
  logging.get_absl_handler().addFilter(train.OwnLogs())
  out = pathlib.Path(_OUT.value)
  rows = []
  for seed in parse_seeds(_SEEDS.value):
    workdir = out / f"seed_{seed}"
    done = report.load_results(workdir)
    if done is None:
      config = _CONFIG.value.copy_and_resolve_references()
      # A "seed" draws the labeled examples and the initialisation/batches, as
      # in the FixMatch protocol; with every label used, only the latter varies.
      config.data.label_seed = seed
      config.seed = seed
      logging.info("label seed %d -> %s", seed, workdir)
      try:
        done = train.train_and_evaluate(config, workdir)
      except errors.MnistTenError as e:
        print(f"error: seed {seed}: {e}", file=sys.stderr)
        sys.exit(2)
    else:
      logging.info("label seed %d: finished earlier, skipped", seed)
    rows.append(done)
  md, csv = report.seed_table(rows)
  (out / "table.md").write_text(md)
  (out / "table.csv").write_text(csv)
  print(md)


if __name__ == "__main__":
  app.run(main)
