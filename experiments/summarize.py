"""One table over several run_seeds.py output folders (the README's results table).

    python experiments/summarize.py experiments/results/knn experiments/results/supervised ...

One row per argument; folders joined by `+` pool their seeds into one row
(e.g. the same config's draws run in two sittings:
experiments/results/default+experiments/results/default_seeds_5_9), and
`=LABEL` at the end names the row where the config's name alone would not
tell it from another (command-line overrides are not part of the name):
"experiments/results/simclr_propagate_vote=simclr:probe=propagate (vote=10)".
"""
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from experiments import report  # pylint: disable=g-import-not-at-top


def _settings(workdir: pathlib.Path) -> dict:
  """A run's config.json, flattened, less what differs between the draws of
  one config (the label seed, the seed, each draw's own `init_from`)."""
  path = workdir / "config.json"
  if not path.exists():
    return {}

  def flat(d, prefix=""):
    out = {}
    for k, v in d.items():
      out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out
  settings = flat(json.loads(path.read_text()))
  for key in ("data.label_seed", "seed", "init_from"):
    settings.pop(key, None)
  return settings


def load_group(arg: str):
  """The finished runs of one row: the seed_* folders of each `+`-joined
  folder. Pooled folders must hold the same config (overrides included) on
  different label seeds."""
  rows, settings = [], []
  for d in map(pathlib.Path, arg.split("+")):
    for w in sorted(d.glob("seed_*")):
      r = report.load_results(w)
      if r:
        rows.append(r)
        settings.append(_settings(w))
  seeds = [r["label_seed"] for r in rows]
  if len(set(seeds)) < len(seeds):
    raise SystemExit(f"{arg}: label seed(s) {sorted({s for s in seeds if seeds.count(s) > 1})} "
                     "appear twice; pool only different draws")
  differ = sorted({k for s in settings for k in set(s) | set(settings[0])
                   if s.get(k) != settings[0].get(k)})
  if differ:
    raise SystemExit(f"{arg}: the runs differ in {', '.join(differ[:5])}; pool only draws "
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
