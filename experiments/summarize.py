"""One table over several run_seeds.py output folders (the README's results table).

    python experiments/summarize.py experiments/results/knn experiments/results/supervised ...

One row per argument; folders joined by `+` pool their seeds into one row
(e.g. the same config's draws run in two sittings:
experiments/results/default+experiments/results/default_seeds_5_9), and
`=LABEL` at the end names the row where the config's name alone would not
tell it from another (command-line overrides are not part of the name):
"experiments/results/simclr_propagate_vote=simclr:probe=propagate (vote=10)".
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from experiments import report  # pylint: disable=g-import-not-at-top


def load_group(arg: str):
  """The finished runs of one row: the seed_* folders of each `+`-joined folder."""
  rows = []
  for d in map(pathlib.Path, arg.split("+")):
    rows += [r for r in (report.load_results(w) for w in sorted(d.glob("seed_*"))) if r]
  if len({(r["config"], r["dataset"]) for r in rows}) > 1:
    raise SystemExit(f"{arg}: the folders hold different configs or datasets; "
                     "pool only draws of one config")
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
