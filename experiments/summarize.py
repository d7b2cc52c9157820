"""One table over several run_seeds.py output folders (the README's results table).

    python experiments/summarize.py experiments/results/knn experiments/results/supervised ...
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from experiments import report  # pylint: disable=g-import-not-at-top


def main(dirs):
  groups = []
  for d in map(pathlib.Path, dirs):
    rows = [r for r in (report.load_results(w) for w in sorted(d.glob("seed_*"))) if r]
    if rows:
      groups.append(rows)
    else:
      print(f"(no finished runs in {d})", file=sys.stderr)
  print(report.summary_table(groups))


if __name__ == "__main__":
  main(sys.argv[1:])
