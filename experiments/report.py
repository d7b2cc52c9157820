"""Tables over label seeds, from the results.json files of finished runs."""
import json
import pathlib
from typing import List, Optional

import numpy as np


def load_results(workdir) -> Optional[dict]:
  """A finished run's results.json, with `train_seconds_all_stages`: its
  training time plus any pre-training preparation (graph building) and that of
  every earlier stage (in workdir/pretrain, workdir/pretrain/pretrain, ...) —
  what a user waits for."""
  path = pathlib.Path(workdir) / "results.json"
  if not path.exists():
    return None
  results = json.loads(path.read_text())
  if "restored_from" in results:
    # A row written back from a table.csv whose run directory was not kept
    # (before results.json files were kept in git): it carries its totals.
    return results
  stages = [results]
  stage = pathlib.Path(workdir) / "pretrain"
  while (stage / "results.json").exists():
    stages.append(json.loads((stage / "results.json").read_text()))
    stage = stage / "pretrain"
  results["train_seconds_all_stages"] = sum(
      r["train_seconds"] + r.get("prepare_seconds", 0.0) for r in stages)
  results["steps_all_stages"] = [r.get("steps", 0) for r in reversed(stages)]  # first stage first
  return results


def _train_seconds(r: dict) -> float:
  return r.get("train_seconds_all_stages", r["train_seconds"])


def seed_ranges(seeds) -> str:
  """[0, 1, 2, 3, 5] -> '0-3,5': which label draws a row is over."""
  seeds, parts = sorted(set(seeds)), []
  for s in seeds:
    if parts and s == parts[-1][1] + 1:
      parts[-1][1] = s
    else:
      parts.append([s, s])
  return ",".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in parts)


def summary(rows: List[dict]) -> dict:
  acc = np.array([r["test_accuracy_ema"] for r in rows]) * 100
  return {"config": rows[0]["config"], "dataset": rows[0]["dataset"], "runs": len(rows),
          "seeds": seed_ranges(r["label_seed"] for r in rows),
          "mean": acc.mean(), "std": acc.std(ddof=1) if len(acc) > 1 else 0.0,
          "min": acc.min(), "max": acc.max(),
          "train_min": np.mean([_train_seconds(r) for r in rows]) / 60,
          "wall_min": np.mean([r["wall_seconds"] for r in rows]) / 60,
          "images_per_second": np.mean([r["images_per_second"] for r in rows]),
          # e.g. "1200+800": the steps of each stage, first stage first.
          "steps": "+".join(map(str, rows[0].get("steps_all_stages", [rows[0]["steps"]])))}


def lowest_class(r: dict):
  """(class index, EMA test accuracy) of a run's weakest class, or None when
  its results.json predates per-class accuracies: a collapsed class shows here
  when the mean hides it."""
  per_class = r.get("test_per_class_accuracy_ema")
  if not per_class:
    return None
  c = int(np.argmin(per_class))
  return c, per_class[c]


def seed_table(rows: List[dict]):
  """(markdown, csv) with one row per seed and a summary line."""
  s = summary(rows)
  md = ["| label seed | test acc. EMA (%) | test acc. raw (%) | macro-F1 EMA | lowest class (%) | "
        "steps | train time (min) | wall time (min) | images/s |",
        "|---|---|---|---|---|---|---|---|---|"]
  csv = ["label_seed,test_accuracy_ema,test_accuracy_raw,test_macro_f1_ema,lowest_class,"
         "lowest_class_accuracy,steps,train_seconds,wall_seconds,images_per_second"]
  for r in rows:
    low = lowest_class(r)
    md.append(f"| {r['label_seed']} | {100 * r['test_accuracy_ema']:.2f} | "
              f"{100 * r['test_accuracy_raw']:.2f} | {r['test_macro_f1_ema']:.4f} | "
              f"{f'{low[0]}: {100 * low[1]:.1f}' if low else ''} | "
              f"{r['steps']} | {_train_seconds(r) / 60:.1f} | "
              f"{r['wall_seconds'] / 60:.1f} | {r['images_per_second']:.0f} |")
    csv.append(f"{r['label_seed']},{r['test_accuracy_ema']},{r['test_accuracy_raw']},"
               f"{r['test_macro_f1_ema']},{low[0] if low else ''},{low[1] if low else ''},"
               f"{r['steps']},{_train_seconds(r):.1f},"
               f"{r['wall_seconds']:.1f},{r['images_per_second']:.1f}")
  md.append(f"\n**{s['config']}** on {s['dataset']}, {s['runs']} label seeds: "
            f"**{s['mean']:.2f} ± {s['std']:.2f}%** (min {s['min']:.2f}, max {s['max']:.2f}); "
            f"mean train time {s['train_min']:.1f} min, wall {s['wall_min']:.1f} min.")
  return "\n".join(md) + "\n", "\n".join(csv) + "\n"


def summary_table(groups: List[List[dict]]) -> str:
  """One markdown row per group of runs: mean ± std, min, max over its seeds."""
  md = ["| config | dataset | steps | label seeds | mean ± std (%) | min | max | train min/run | "
        "wall min/run | images/s |", "|---|---|---|---|---|---|---|---|---|---|"]
  for rows in groups:
    s = summary(rows)
    md.append(f"| {s['config']} | {s['dataset']} | {s['steps']} | {s['seeds']} | "
              f"{s['mean']:.2f} ± "
              f"{s['std']:.2f} | {s['min']:.2f} | {s['max']:.2f} | {s['train_min']:.1f} | "
              f"{s['wall_min']:.1f} | {s['images_per_second']:.0f} |")
  return "\n".join(md) + "\n"


def configs_table(groups: List[List[dict]], commands: List[str]) -> str:
  """One row per config: the command that runs it, its result over label
  draws and its training time (the README's table of shipped configs)."""
  md = ["| config | command | result (%), label seeds | train min/run |", "|---|---|---|---|"]
  for rows, command in zip(groups, commands):
    s = summary(rows)
    data = "" if s["dataset"] == "mnist" else f" ({s['dataset']})"
    md.append(f"| {s['config']} | `{command}` | {s['mean']:.2f} ± {s['std']:.2f}, "
              f"{s['seeds']}{data} | {s['train_min']:.1f} |")
  return "\n".join(md) + "\n"
