"""One table over several run_seeds.py output folders (the README's results table).

    python experiments/summarize.py experiments/results/knn experiments/results/supervised ...

One row per argument; folders joined by `+` pool their seeds into one row
(e.g. the same config's draws run in two sittings:
experiments/results/archive/default_before_refine+experiments/results/archive/default_before_refine_seeds_5_9), and
`=LABEL` at the end names the row where the config's name alone would not
tell it from another (command-line overrides are not part of the name):
"experiments/results/simclr_propagate_vote=simclr:probe=propagate (vote=10)".
"""
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from experiments import report  # pylint: disable=g-import-not-at-top
from mnist_ten import config as config_lib  # pylint: disable=g-import-not-at-top


# What differs between the draws of one config.
_PER_DRAW = ("data.label_seed", "seed", "init_from")


def _config(workdir: pathlib.Path) -> dict:
  path = workdir / "config.json"
  return json.loads(path.read_text()) if path.exists() else {}


def load_group(arg: str):
  """The finished runs of one row: the seed_* folders of each `+`-joined
  folder. Pooled folders must hold the same config (overrides included) on
  different label seeds."""
  rows, configs = [], []
  for d in map(pathlib.Path, arg.split("+")):
    for w in sorted(d.glob("seed_*")):
      r = report.load_results(w)
      if r:
        rows.append(r)
        configs.append(_config(w))
  seeds = [r["label_seed"] for r in rows]
  if len(set(seeds)) < len(seeds):
    raise SystemExit(f"{arg}: label seed(s) {sorted({s for s in seeds if seeds.count(s) > 1})} "
                     "appear twice; pool only different draws")
  named = sorted({(r["config"], r["dataset"]) for r in rows})
  if len(named) > 1:
    raise SystemExit(f"{arg}: the runs are of {named}; pool only draws of one config")
  # Rows restored from a table.csv (report.load_results) have no config.json
  # to compare beyond their name and dataset; the others must agree in full.
  configs = [c for c in configs if c]
  differ = list(dict.fromkeys(d for c in configs[1:]  # each difference once
                              for d in config_lib.differences(configs[0], c, ignore=_PER_DRAW)))
  if differ:
    raise SystemExit(f"{arg}: the runs differ in {'; '.join(differ[:5])}; pool only draws "
                     "of one config")
  return rows


def main(args):
  groups = []
  for arg in args:
    folders, _, label = arg.partition("=")
    rows = load_group(folders)
    if rows:
      groups.append([dict(r, config=label) for r in rows] if label else rows)
    else:
      print(f"(no finished runs in {arg})", file=sys.stderr)
  print(report.summary_table(groups))


if __name__ == "__main__":
  main(sys.argv[1:])
