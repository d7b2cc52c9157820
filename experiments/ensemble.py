"""Ensembles over label draws: for each draw, N members of one config that
differ by initialisation seed (and by any settings given per member), then
their soft vote, hard vote and selection (mnist_ten/ensemble.py).

    python experiments/ensemble.py --config=configs/supervised.py:all \
        --config.data.validation_size=5000 --members=5 --seeds=0 \
        --selector=validation --out=experiments/results/ensemble_supervised_all
    python experiments/ensemble.py --config=configs/default.py --members=3 \
        --seeds=0-2 --selector=agreement --out=experiments/results/ensemble_default
    python experiments/ensemble.py --config=configs/supervised.py:all --members=3 \
        --member_override=1:model=lenet --member_override=2:model.widths="(32,64,128)" ...

Member m of draw d trains in OUT/seed_d/member_m (data.label_seed = d, seed =
m, then member m's `--member_override` settings): finished members are
reused (a finished member of other settings is refused), unfinished ones
resume from their checkpoints, so an ensemble can grow over sittings.
OUT/seed_d/results.json holds the combination (its test_accuracy_ema is the
soft vote's) and every member's accuracy; OUT/table.md and table.csv the rows
over draws.
"""
import pathlib
import sys

from absl import app
from absl import flags
from absl import logging
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from experiments import report  # pylint: disable=g-import-not-at-top
from experiments import run_seeds  # pylint: disable=g-import-not-at-top
from mnist_ten import config as config_lib  # pylint: disable=g-import-not-at-top
from mnist_ten import ensemble  # pylint: disable=g-import-not-at-top
from mnist_ten import errors  # pylint: disable=g-import-not-at-top
from mnist_ten import train  # pylint: disable=g-import-not-at-top
from mnist_ten import workdir as workdir_lib  # pylint: disable=g-import-not-at-top

# --config, --seeds (label draws) and --out are run_seeds.py's flags.
_MEMBERS = flags.DEFINE_integer("members", 3, "Members per draw (init seeds 0..N-1).")
_SELECTOR = flags.DEFINE_enum("selector", "agreement", list(ensemble.SELECTORS),
                              "How the selector scores members.")
_MEMBER_OVERRIDE = flags.DEFINE_multi_string(
    "member_override", [], "M:key.path=value: member M's own setting on top of --config "
    "(repeatable), e.g. 1:propagate.k=15 or 2:model=lenet; the others keep --config's.")
_TOLERANCE = flags.DEFINE_float("tolerance", 0.005,
                                "The selector keeps members scoring within this of the best.")


def parse_member_overrides(texts, num_members: int) -> dict:
  """['1:propagate.k=15', ...] -> {1: ['propagate.k=15'], ...}."""
  out = {}
  for text in texts:
    member, sep, setting = text.partition(":")
    if not sep or not member.strip().isdigit() or int(member) >= num_members:
      raise errors.ConfigError(
          f"--member_override={text!r}: write it as M:key.path=value with M a member "
          f"from 0 to {num_members - 1}")
    if setting.split("=")[0].strip().split(".")[0] in ("data", "seed"):
      raise errors.ConfigError(
          f"--member_override={text!r}: the members of a draw share its data and split, and "
          "each takes its member number as seed; vary anything else")
    out.setdefault(int(member), []).append(setting)
  return out


def member_config(config, draw: int, member: int, overrides=()):
  """Member `member` of draw `draw`: the draw's labeled examples, the member's
  own initialisation and batches, and its own settings."""
  config_m = run_seeds.config_for(config, draw, seed=member)
  for text in overrides:
    try:
      config_lib.override(config_m, text)
    except errors.ConfigError as e:
      raise errors.ConfigError(f"--member_override for member {member}: {e}") from None
  return config_m


def check_draw(config, draw: int, num_members: int, out: pathlib.Path, member_overrides):
  """(each member's config, its finished results or None): every setting
  applied and every finished member checked against it, before any trains."""
  configs = [member_config(config, draw, m, member_overrides.get(m, ()))
             for m in range(num_members)]
  finished = []
  for m, config_m in enumerate(configs):
    workdir = out / f"seed_{draw}" / f"member_{m}"
    finished.append(report.load_results(workdir))
    if finished[-1] is not None:
      run_seeds.check_finished(workdir, config_m)
  return configs, finished


def run_draw(config, draw: int, num_members: int, out: pathlib.Path, selector: str,
             tolerance: float, member_overrides=None) -> dict:
  """Trains (or reuses) the members of one draw, combines them, writes
  OUT/seed_DRAW/results.json."""
  ensemble.check(selector, config, num_members, tolerance)  # before any member trains
  member_overrides = member_overrides or {}
  draw_dir = out / f"seed_{draw}"
  configs, finished = check_draw(config, draw, num_members, out, member_overrides)
  rows = []
  for m, done in enumerate(finished):
    workdir = draw_dir / f"member_{m}"
    if done is None:
      logging.info("draw %d, member %d -> %s", draw, m, workdir)
      train.train_and_evaluate(configs[m], workdir)
      done = report.load_results(workdir)  # with every stage's time counted
    rows.append(done)
  members = [ensemble.load_member(draw_dir / f"member_{m}") for m in range(num_members)]
  combined = ensemble.combine(members, selector, tolerance)
  first = rows[0]
  record = {
      "config": f"{first['config']} x{num_members}", "dataset": first["dataset"],
      "label_seed": draw, "members_config": first["config"],
      "member_overrides": {str(m): list(v) for m, v in sorted(member_overrides.items())},
      # The soft vote of the members' final (EMA) models.
      "test_accuracy_ema": combined["soft_vote"]["accuracy"],
      "test_macro_f1_ema": combined["soft_vote"]["macro_f1"],
      "test_accuracy_hard_vote": combined["hard_vote"]["accuracy"],
      "test_accuracy_selected": combined["selected"]["accuracy"],
      "member_test_accuracy_ema": [r["test_accuracy_ema"] for r in rows],
      **combined,
      # What the ensemble costs: every member's training, one after another.
      "steps": first["steps"], "steps_all_stages": first.get("steps_all_stages"),
      "train_seconds": sum(r["train_seconds_all_stages"] for r in rows),
      "train_seconds_all_stages": sum(r["train_seconds_all_stages"] for r in rows),
      "wall_seconds": sum(r["wall_seconds"] for r in rows),
      "images_per_second": float(np.mean([r["images_per_second"] for r in rows])),
  }
  workdir_lib.write_json(draw_dir / "results.json", record)
  return record


def table(out: pathlib.Path) -> str:
  """OUT/table.md and table.csv: one row per finished draw."""
  done = sorted(filter(None, map(report.load_results, out.glob("seed_*"))),
                key=lambda r: r["label_seed"])
  md = ["| label draw | members (test acc. %) | soft vote | hard vote | selected (members) | "
        "train min (all members) |", "|---|---|---|---|---|---|"]
  csv = ["label_seed,members,soft_vote,hard_vote,selected,selected_members,train_seconds"]
  for r in done:
    members = " ".join(f"{100 * a:.2f}" for a in r["member_test_accuracy_ema"])
    md.append(f"| {r['label_seed']} | {members} | {100 * r['test_accuracy_ema']:.2f} | "
              f"{100 * r['test_accuracy_hard_vote']:.2f} | "
              f"{100 * r['test_accuracy_selected']:.2f} ({r['selected']['members']}) | "
              f"{r['train_seconds'] / 60:.1f} |")
    csv.append(f"{r['label_seed']},{' '.join(map(str, r['member_test_accuracy_ema']))},"
               f"{r['test_accuracy_ema']},{r['test_accuracy_hard_vote']},"
               f"{r['test_accuracy_selected']},{' '.join(map(str, r['selected']['members']))},"
               f"{r['train_seconds']:.1f}")
  if done:
    lines = []
    for key, name in (("member_mean", "members (mean of each draw's members)"),
                      ("test_accuracy_ema", "soft vote"),
                      ("test_accuracy_hard_vote", "hard vote"),
                      ("test_accuracy_selected", f"selected ({done[0]['selected']['selector']})")):
      values = 100 * np.array([np.mean(r["member_test_accuracy_ema"]) if key == "member_mean"
                               else r[key] for r in done])
      std = values.std(ddof=1) if len(values) > 1 else 0.0
      lines.append(f"- {name}: **{values.mean():.2f} ± {std:.2f}%** (min {values.min():.2f}, "
                   f"max {values.max():.2f})")
    own = "; ".join(f"member {m}: {', '.join(v)}"
                    for m, v in done[0].get("member_overrides", {}).items())
    md.append(f"\n**{done[0]['config']}** on {done[0]['dataset']}, {len(done)} label draw(s) "
              f"({report.seed_ranges(r['label_seed'] for r in done)})"
              f"{f' (own settings: {own})' if own else ''}:\n" + "\n".join(lines))
  (out / "table.md").write_text("\n".join(md) + "\n")
  (out / "table.csv").write_text("\n".join(csv) + "\n")
  return "\n".join(md) + "\n"


def main(argv):
  del argv
  logging.get_absl_handler().addFilter(train.OwnLogs())
  out = pathlib.Path(flags.FLAGS.out)
  overrides = parse_member_overrides(_MEMBER_OVERRIDE.value, _MEMBERS.value)
  draws = run_seeds.parse_seeds(flags.FLAGS.seeds)
  for draw in draws:  # a refusal before hours of training, not after
    check_draw(flags.FLAGS.config, draw, _MEMBERS.value, out, overrides)
  for draw in draws:
    run_draw(flags.FLAGS.config, draw, _MEMBERS.value, out, _SELECTOR.value, _TOLERANCE.value,
             overrides)
    table(out)
  print(table(out))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "out"])
  app.run(errors.guard(main))
