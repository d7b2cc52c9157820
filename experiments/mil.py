"""Multiple-instance learning on MNIST bags over draws: configs/mil.py for each
pooling and number of training bags, each over the draws of bags `--seeds`.

    python experiments/mil.py --poolings=attention,gated,max,mean \
        --bags=50,100,200,500 --seeds=0-4
    python experiments/mil.py --pretrained=WORKDIR --poolings=attention --bags=50

Each cell runs through run_seeds.py's `run` into
experiments/results/mil[_pretrained]_POOLING_BAGS/seed_N (resumable; finished
draws are skipped). Then experiments/results/mil/table.md and table.csv
gather every finished cell: bag accuracy, bag AUC and instance AUC, mean ±
std over draws, beside Ilse et al.'s published AUC where we have it.
"""
import csv
import io
import pathlib
import re
import sys

from absl import app
from absl import flags
from absl import logging
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from configs import mil as mil_config  # pylint: disable=g-import-not-at-top
from experiments import report  # pylint: disable=g-import-not-at-top
from experiments import run_seeds  # pylint: disable=g-import-not-at-top
from mnist_ten import errors  # pylint: disable=g-import-not-at-top
from mnist_ten import train  # pylint: disable=g-import-not-at-top

_POOLINGS = flags.DEFINE_string("poolings", "attention,gated,max,mean", "Poolings.")
_BAGS = flags.DEFINE_string("bags", "50,100,200,500", "Numbers of training bags.")
_PRETRAINED = flags.DEFINE_string(
    "pretrained", "", "A finished run whose LeNet encoder becomes the frozen instance "
    "encoder (configs/mil.py:pretrained).")
_RESULTS = pathlib.Path(__file__).resolve().parent / "results"

# Ilse et al. 2018, test AUC on MNIST-bags (mean bag size 10), where we could
# read it: (pooling, training bags) -> (AUC, source). The paper's appendix
# tables were not readable from this machine; only these cells are quoted.
PAPER_AUC = {
    ("attention", 50): (0.768, "quoted from the paper in AttentionDeepMIL issue #14"),
}
# A reproduction of the paper's MNIST-bags experiment (the same bags: mean
# size 10, std 2, target 9, 1,000 test bags; 50 repetitions): Shi et al.,
# "Loss-based Attention for Deep Multiple Instance Learning", AAAI 2020,
# Table 2 (its PDF in github.com/xsshi2015/Loss-Attention), embedding-level
# max and mean and softmax attention. Its training differs from ours (its
# own schedule, as the paper's).
REPRODUCED_AUC = {(pooling, bags): auc for pooling, aucs in {
    "attention": (0.914, 0.963, 0.977, 0.984), "gated": (0.908, 0.959, 0.973, 0.979),
    "max": (0.805, 0.943, 0.962, 0.975), "mean": (0.794, 0.847, 0.904, 0.934),
}.items() for bags, auc in zip((50, 100, 150, 200), aucs)}


def cell_dir(pooling: str, bags: int, pretrained: bool) -> pathlib.Path:
  return _RESULTS / f"mil{'_pretrained' if pretrained else ''}_{pooling}_{bags}"


def run_cell(pooling: str, bags: int, seeds, pretrained: str = ""):
  preset = f"pooling={pooling},bags={bags}" + (",pretrained" if pretrained else "")
  config = mil_config.get_config(preset)
  config.plots = False
  if pretrained:
    config.init_from = pretrained
  return run_seeds.run(config, seeds, cell_dir(pooling, bags, bool(pretrained)))


def _stats(values):
  values = np.array([v for v in values if v is not None], np.float64)
  if not values.size:
    return None
  return values.mean(), values.std(ddof=1) if values.size > 1 else 0.0


def table() -> str:
  """experiments/results/mil/table.{md,csv} from every finished cell."""
  cells = []
  for path in sorted(_RESULTS.glob("mil_*")):
    cell = re.fullmatch(r"mil_(pretrained_)?([a-z]+)_(\d+)", path.name)
    if not cell or cell[2] not in mil_config.POOLINGS:
      continue  # e.g. mil_encoder, the pretrained encoder's run
    pretrained, pooling, bags = bool(cell[1]), cell[2], cell[3]
    rows = [r for r in map(report.load_results, sorted(path.glob("seed_*")))
            if r and r.get("test_auc_ema") is not None]
    if rows:
      cells.append((pretrained, mil_config.POOLINGS.index(pooling), int(bags), pooling, rows))
  cells.sort()
  md = ["| instance encoder | pooling | training bags | draws | bag accuracy (%) | bag AUC | "
        "bag AUC min | instance AUC | paper's AUC | Shi et al.'s AUC | train s/run |",
        "|---|---|---|---|---|---|---|---|---|---|---|"]
  out = io.StringIO()
  writer = csv.writer(out)
  writer.writerow(["pretrained", "pooling", "bags", "draws", "accuracy_mean", "accuracy_std",
                   "auc_mean", "auc_std", "auc_min", "instance_auc_mean", "instance_auc_std",
                   "paper_auc", "reproduced_auc", "train_seconds"])
  for pretrained, _, bags, pooling, rows in cells:
    acc = _stats([100 * r["test_accuracy_ema"] for r in rows])
    auc = _stats([r.get("test_auc_ema") for r in rows])
    inst = _stats([r.get("test_instance_auc_ema") for r in rows])
    paper = None if pretrained else PAPER_AUC.get((pooling, bags), (None,))[0]
    again = None if pretrained else REPRODUCED_AUC.get((pooling, bags))
    seconds = np.mean([r["train_seconds"] for r in rows])
    md.append(
        f"| {'pretrained, frozen' if pretrained else 'paper LeNet, from scratch'} | {pooling} | "
        f"{bags} | {report.seed_ranges(r['label_seed'] for r in rows)} | "
        f"{acc[0]:.1f} ± {acc[1]:.1f} | {auc[0]:.3f} ± {auc[1]:.3f} | "
        f"{min(r['test_auc_ema'] for r in rows):.3f} | "
        + (f"{inst[0]:.3f} ± {inst[1]:.3f}" if inst else "–")
        + f" | {paper if paper is not None else '–'} | {again if again is not None else '–'} | "
        f"{seconds:.0f} |")
    writer.writerow([pretrained, pooling, bags, len(rows), acc[0], acc[1], auc[0], auc[1],
                     min(r["test_auc_ema"] for r in rows), inst[0] if inst else "",
                     inst[1] if inst else "", paper if paper is not None else "",
                     again if again is not None else "", round(seconds, 1)])
  notes = "".join(f"\nPaper's AUC, {p} pooling at {n} bags: {source}." for (p, n), (_, source)
                  in PAPER_AUC.items()) + (
                      "\nShi et al.'s AUC: a reproduction of the paper's experiment (Shi et al., "
                      "AAAI 2020, Table 2; the same bags, its own training), 50 to 200 bags.")
  text = "\n".join(md) + "\n" + notes + "\n"
  (_RESULTS / "mil").mkdir(exist_ok=True)
  (_RESULTS / "mil" / "table.md").write_text(text)
  (_RESULTS / "mil" / "table.csv").write_text(out.getvalue())
  return text


def main(argv):
  del argv
  logging.get_absl_handler().addFilter(train.OwnLogs())
  seeds = run_seeds.parse_seeds(flags.FLAGS.seeds)  # run_seeds.py's --seeds
  try:
    sizes = [int(b) for b in _BAGS.value.split(",")]
  except ValueError:
    raise errors.ConfigError(f"--bags={_BAGS.value!r}: give numbers of training bags, "
                             "e.g. 50,100") from None
  for bags in sizes:
    for pooling in filter(None, _POOLINGS.value.split(",")):
      run_cell(pooling, bags, seeds, _PRETRAINED.value)
      print(table())
  print(table())


if __name__ == "__main__":
  app.run(errors.guard(main))
