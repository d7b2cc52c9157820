"""Tables over run_seeds.py output folders: the manifest's tables, or any folders.

    python experiments/summarize.py --table=headline        # one table of experiments/tables.py
    python experiments/summarize.py --write                 # rewrite every table block in README.md, docs/
    python experiments/summarize.py --check                 # exit 1 when a block differs
    python experiments/summarize.py experiments/results/knn experiments/results/supervised ...

Without --table, one row per argument; folders joined by `+` pool their seeds
into one row (the same config's draws run in two sittings), and `=LABEL` at
the end names the row where the config's name alone would not tell it from
another: "experiments/results/simclr_propagate_vote=simclr:probe=propagate (vote=10)".
A table block in a markdown file is `<!-- table:NAME -->`, the table, `<!-- /table -->`.
"""
import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from experiments import report  # pylint: disable=g-import-not-at-top
from experiments import tables  # pylint: disable=g-import-not-at-top
from mnist_ten import config as config_lib  # pylint: disable=g-import-not-at-top
from mnist_ten import errors  # pylint: disable=g-import-not-at-top

RESULTS = ROOT / "experiments" / "results"
DOCS = ("README.md", "docs/*.md")
BLOCK = re.compile(r"(<!-- table:([\w-]+) -->\n)(.*?)(<!-- /table -->)", re.S)

# What differs between the draws of one config.
_PER_DRAW = ("data.label_seed", "seed", "init_from",
             # Derived from the draw's images (data.standardize), not chosen.
             "model.standardize")


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
    raise errors.ConfigError(f"{arg}: label seed(s) {sorted({s for s in seeds if seeds.count(s) > 1})} "
                     "appear twice; pool only different draws")
  named = sorted({(r["config"], r["dataset"]) for r in rows})
  if len(named) > 1:
    raise errors.ConfigError(f"{arg}: the runs are of {named}; pool only draws of one config")
  # Rows restored from a table.csv (report.load_results) have no config.json
  # to compare beyond their name and dataset; the others must agree in full.
  configs = [c for c in configs if c]
  differ = list(dict.fromkeys(d for c in configs[1:]  # each difference once
                              for d in config_lib.differences(configs[0], c, ignore=_PER_DRAW)))
  if differ:
    raise errors.ConfigError(f"{arg}: the runs differ in {'; '.join(differ[:5])}; pool only draws "
                     "of one config")
  return rows


def row_runs(row: tables.Row):
  """The runs of a manifest row, checked against what the manifest says."""
  folders = "+".join(str(RESULTS / f) for f in row.folders.split("+"))
  runs = load_group(folders)
  seeds = report.seed_ranges(r["label_seed"] for r in runs) if runs else "none"
  if seeds != row.seeds:
    raise errors.ConfigError(f"manifest row {row.label!r} ({row.folders}): expected label seeds "
                     f"{row.seeds}, the folders hold {seeds}")
  if runs and runs[0]["dataset"] != row.dataset:
    raise errors.ConfigError(f"manifest row {row.label!r}: dataset {runs[0]['dataset']}, the manifest "
                     f"says {row.dataset}")
  return [dict(r, config=row.label) for r in runs]


def launch_command(row: tables.Row) -> str:
  """The run_seeds command as one launch of draw 0."""
  parts = [p for p in row.command.split() if not p.startswith(("--seeds=", "--out="))]
  return " ".join(parts).replace(tables.RUN, "python launch.py").replace("{seed}", "0")


def table(name: str) -> str:
  if name not in tables.TABLES:
    raise errors.ConfigError(f"unknown table {name!r}; known: {', '.join(tables.TABLES)}")
  kind, ids = tables.TABLES[name]
  if kind == "file":
    path = RESULTS / ids[0]
    return path.read_text() if path.exists() else f"(no results yet: {path.relative_to(ROOT)})\n"
  rows = [tables.ROWS[i] for i in ids]
  if kind == "commands":  # what reproduces each row, as a shell block
    lines = [f"# {r.label} on {r.dataset}, seeds {r.seeds} ({r.status}; {r.commit})"
             f"{': ' + r.note if r.note else ''}\n{r.command}"
             for r in rows if r.command.startswith(("python", "git"))]
    return "```bash\n" + "\n".join(lines) + "\n```\n"
  if kind == "manifest":
    md = ["| row | folders (experiments/results/) | label seeds | dataset | recorded in | status |",
          "|---|---|---|---|---|---|"]
    md += [f"| {r.label} | {r.folders.replace('+', ' + ')} | {r.seeds} | {r.dataset} | "
           f"{r.commit} | {r.status} |" for r in rows]
    return "\n".join(md) + "\n"
  groups = [row_runs(r) for r in rows]
  if kind == "configs":
    return report.configs_table(groups, [launch_command(r) for r in rows])
  return report.summary_table(groups)


def markdown_files():
  return sorted(p for pattern in DOCS for p in ROOT.glob(pattern))


def regenerate(text: str) -> str:
  """`text` with every table block rebuilt from the manifest."""
  return BLOCK.sub(lambda m: m.group(1) + table(m.group(2)) + m.group(4), text)


def stale_blocks():
  """(file, table name) of every block that differs from the manifest."""
  stale = []
  for path in markdown_files():
    text = path.read_text()
    for m in BLOCK.finditer(text):
      if m.group(3) != table(m.group(2)):
        stale.append((path.relative_to(ROOT), m.group(2)))
  return stale


def main(args):
  if not args:
    errors.fail("name a table (--table=NAME), --write, --check or run folders:\n" + __doc__)
  if args[0].startswith("--table="):
    print(table(args[0].split("=", 1)[1]), end="")
    return
  if args[0] == "--write":
    for path in markdown_files():
      text = path.read_text()
      new = regenerate(text)
      if new != text:
        path.write_text(new)
        print(f"rewrote the tables of {path.relative_to(ROOT)}")
    return
  if args[0] == "--check":
    stale = stale_blocks()
    for path, name in stale:
      print(f"{path}: table {name!r} differs from experiments/tables.py "
            "(python experiments/summarize.py --write)", file=sys.stderr)
    raise SystemExit(1 if stale else 0)
  groups = []
  for arg in args:
    folders, _, label = arg.partition("=")
    rows = load_group(folders)
    if rows:
      groups.append([dict(r, config=label) for r in rows] if label else rows)
    else:
      print(f"(no finished runs in {arg})", file=sys.stderr)
  if not groups:
    raise errors.ConfigError("no finished runs in any of the folders given")
  print(report.summary_table(groups))


if __name__ == "__main__":
  errors.guard(main)(sys.argv[1:])
