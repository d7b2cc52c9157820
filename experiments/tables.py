"""The results manifest: every published row, and the tables they form.

A row names its results folder(s) under experiments/results (a `+` pools
folders' draws into one row), the label seeds it must hold, the dataset, the
commit that recorded its runs (rows from before results.json carried
`git_commit` name the commit whose tree first held their table; the code they
ran is that commit or its parent), whether it is current or superseded, and
the command that reproduces it. `python experiments/summarize.py
--table=NAME` prints a table; `--write` rewrites every
`<!-- table:NAME -->` block of README.md and docs/*.md from here, and
tests/test_experiments.py fails when a block differs from what this file
regenerates.
"""
import dataclasses
from typing import Dict, Tuple

RUN = "python experiments/run_seeds.py"


@dataclasses.dataclass(frozen=True)
class Row:
  label: str  # the config column
  folders: str  # results folders under experiments/results, `+`-joined to pool draws
  seeds: str  # the label seeds the row must hold, e.g. "0-4"
  commit: str
  command: str  # what reproduces the row
  dataset: str = "mnist"
  status: str = "current"  # current | superseded (kept for the record, in archive/)
  note: str = ""  # shown beside the command


def _preset_row(config: str, preset: str, seeds: str, commit: str, dataset: str,
                note: str) -> Row:
  """The row of `configs/CONFIG.py:PRESET` run by run_seeds.py into
  experiments/results/CONFIG_PRESET (`=` in the preset becomes `_`)."""
  folder = f"{config}_{preset.replace('=', '_')}"
  return Row(f"{config}:{preset}", folder, seeds, commit,
             f"{RUN} --config=configs/{config}.py:{preset} --seeds={seeds} "
             f"--out=experiments/results/{folder}", dataset=dataset, note=note)


def _override_row(label: str, config: str, overrides: str, folder: str, seeds: str,
                  commit: str, note: str) -> Row:
  """The row of `configs/CONFIG.py` (`NAME:PRESET` for a preset) with
  command-line `overrides`, run by run_seeds.py over `seeds` into
  experiments/results/FOLDER."""
  name, colon, preset = config.partition(":")
  return Row(label, folder, seeds, commit,
             f"{RUN} --config=configs/{name}.py{colon}{preset} {overrides} --seeds={seeds} "
             f"--out=experiments/results/{folder}", note=note)


ROWS: Dict[str, Row] = {r.label if i is None else i: r for i, r in [
    (None, Row("knn", "knn", "0-4", "b75fef7",
               f"{RUN} --config=configs/knn.py --seeds=0-4 --out=experiments/results/knn")),
    (None, Row("supervised", "supervised", "0-4", "6a2de20",
               f"{RUN} --config=configs/supervised.py --seeds=0-4 "
               "--out=experiments/results/supervised")),
    ("fixmatch_300", Row("fixmatch", "fixmatch_300", "0-4", "b13d47f",
                         f"{RUN} --config=configs/fixmatch.py --config.num_steps=300 --seeds=0-4 "
                         "--out=experiments/results/fixmatch_300")),
    ("fixmatch_align_300", Row("fixmatch:align", "fixmatch_align_300", "0-2", "e7f7ffb",
                               f"{RUN} --config=configs/fixmatch.py:align --config.num_steps=300 "
                               "--seeds=0-2 --out=experiments/results/fixmatch_align_300")),
    (None, Row("fixmatch", "fixmatch", "0-4", "eb1daf3",
               f"{RUN} --config=configs/fixmatch.py --seeds=0-4 "
               "--out=experiments/results/fixmatch", note="the full 2,000 steps")),
    (None, Row("fixmatch:align", "fixmatch_align", "0-2", "1589e3c",
               f"{RUN} --config=configs/fixmatch.py:align --seeds=0-2 "
               "--out=experiments/results/fixmatch_align")),
    ("fixmatch_align_rerun", Row(
        "fixmatch:align (rerun)", "fixmatch_align_rerun", "0", "b22858c",
        f"{RUN} --config=configs/fixmatch.py:align --seeds=0 "
        "--out=experiments/results/fixmatch_align_rerun",
        note="the joint pass again, with the training code of the two rows below")),
    ("fixmatch_align_separate", Row(
        "fixmatch:align (weak_pass=separate)", "fixmatch_align_separate", "0-2", "1589e3c",
        f"{RUN} --config=configs/fixmatch.py:align --config.fixmatch.weak_pass=separate "
        "--seeds=0-2 --out=experiments/results/fixmatch_align_separate")),
    ("fixmatch_align_no_grad", Row(
        "fixmatch:align (weak_pass=no_grad)", "fixmatch_align_no_grad", "0-1", "0d93940",
        f"{RUN} --config=configs/fixmatch.py:align --config.fixmatch.weak_pass=no_grad "
        "--seeds=0-1 --out=experiments/results/fixmatch_align_no_grad")),
    # Issue 23: FixMatch's adaptive-threshold successors at its 2,000 steps
    # (draw 0 first; the rows grow to 0-2 as later sittings add draws).
    (None, Row("flexmatch", "flexmatch", "0-2", "008d1bd",
               f"{RUN} --config=configs/flexmatch.py --seeds=0-2 "
               "--out=experiments/results/flexmatch",
               note="draw 0 at a993086, draw 1 at 5d3c9f5, the same method code")),
    ("flexmatch_align_queue", _override_row(
        "flexmatch (align, align_batches=128)", "flexmatch",
        "--config.fixmatch.align=True --config.fixmatch.align_batches=128",
        "flexmatch_align_queue", "2", "008d1bd",
        "the draw whose 1s FlexMatch loses, with ReMixMatch's running marginal (issue 23)")),
    (None, Row("freematch", "freematch", "0", "a993086",
               f"{RUN} --config=configs/freematch.py --seeds=0 "
               "--out=experiments/results/freematch")),
    (None, Row("softmatch", "softmatch", "0", "a993086",
               f"{RUN} --config=configs/softmatch.py --seeds=0 "
               "--out=experiments/results/softmatch")),
    ("mixmatch_800", Row("mixmatch", "mixmatch_800", "0-2", "b13d47f",
                         f"{RUN} --config=configs/mixmatch.py --config.num_steps=800 --seeds=0-2 "
                         "--out=experiments/results/mixmatch_800")),
    ("mixmatch_nomixup_800", Row(
        "mixmatch:nomixup", "mixmatch_nomixup_800", "0-2", "b13d47f",
        f"{RUN} --config=configs/mixmatch.py:nomixup --config.num_steps=800 --seeds=0-2 "
        "--out=experiments/results/mixmatch_nomixup_800")),
    ("mixmatch_align_800", Row(
        "mixmatch:align", "mixmatch_align_800", "0-2", "4ae92f4",
        f"{RUN} --config=configs/mixmatch.py:align --config.num_steps=800 --seeds=0-2 "
        "--out=experiments/results/mixmatch_align_800")),
    ("mixmatch_align_nomixup_800", Row(
        "mixmatch:align,nomixup", "mixmatch_align_nomixup_800", "0-2", "a08a0ee",
        f"{RUN} --config=configs/mixmatch.py:align,nomixup --config.num_steps=800 --seeds=0-2 "
        "--out=experiments/results/mixmatch_align_nomixup_800")),
    ("mixmatch_align", Row("mixmatch:align", "mixmatch_align", "0-4", "f879710",
                           f"{RUN} --config=configs/mixmatch.py:align --seeds=0-4 "
                           "--out=experiments/results/mixmatch_align")),
    ("mixmatch_align_queue", _override_row(
        "mixmatch:align (align_batches=128)", "mixmatch:align",
        "--config.mixmatch.align_batches=128", "mixmatch_align_queue", "0-2", "008d1bd",
        "ReMixMatch's running marginal over 128 batches (issue 23)")),
    ("mixmatch_align_800_fashion_mnist", Row(
        "mixmatch:align", "mixmatch_align_800_fashion_mnist", "0-2", "9b7b704",
        f"{RUN} --config=configs/mixmatch.py:align --config.num_steps=800 "
        "--config.data.name=fashion_mnist --seeds=0-2 "
        "--out=experiments/results/mixmatch_align_800_fashion_mnist",
        dataset="fashion_mnist")),
    ("simclr_knn", Row("simclr:probe=knn", "simclr_knn", "0-2", "b13d47f",
                       f"{RUN} --config=configs/simclr.py:probe=knn --config.num_steps=500 "
                       "--seeds=0-2 --out=experiments/results/simclr_knn")),
    ("simclr_linear", Row("simclr:probe=linear", "simclr_linear", "0-2", "b13d47f",
                          f"{RUN} --config=configs/simclr.py:probe=linear --seeds=0-2 "
                          "--out=experiments/results/simclr_linear "
                          "--config.init_from=experiments/results/simclr_knn/seed_{seed}",
                          note="each draw's stage 1 from the knn run")),
    ("simclr_finetune", Row("simclr:probe=finetune", "simclr_finetune", "0-2", "b13d47f",
                            f"{RUN} --config=configs/simclr.py:probe=finetune --seeds=0-2 "
                            "--out=experiments/results/simclr_finetune "
                            "--config.init_from=experiments/results/simclr_knn/seed_{seed}")),
    ("simclr_propagate", Row(
        "simclr:probe=propagate", "simclr_propagate", "0-2", "6e10831",
        f"{RUN} --config=configs/simclr.py:probe=propagate --seeds=0-2 "
        "--out=experiments/results/simclr_propagate --config.pretrain.num_steps=500 "
        "--config.init_from=experiments/results/simclr_knn/seed_{seed}")),
    ("simclr_propagate_vote", Row(
        "simclr:probe=propagate (vote=10)", "simclr_propagate_vote", "0-2", "acaa037",
        f"{RUN} --config=configs/simclr.py:probe=propagate --seeds=0-2 "
        "--out=experiments/results/simclr_propagate_vote --config.pretrain.num_steps=500 "
        "--config.init_from=experiments/results/simclr_knn/seed_{seed} "
        "--config.propagate.vote=10")),
    ("pretext_head", Row("pretext:transfer=head", "pretext_head", "0-2", "27ae707",
                         f"{RUN} --config=configs/pretext.py:transfer=head --seeds=0-2 "
                         "--out=experiments/results/pretext_head "
                         "--config.init_from=experiments/results/pretext_full/seed_{seed}/pretrain",
                         note="reuses each draw's stage 1")),
    ("pretext_full", Row("pretext:transfer=full", "pretext_full", "0-2", "233fbff",
                         f"{RUN} --config=configs/pretext.py:transfer=full --seeds=0-2 "
                         "--out=experiments/results/pretext_full")),
    ("pretext_alternate", Row(
        "pretext:transfer=alternate", "pretext_alternate", "0-2", "8bb8a7b",
        f"{RUN} --config=configs/pretext.py:transfer=alternate --seeds=0-2 "
        "--out=experiments/results/pretext_alternate "
        "--config.init_from=experiments/results/pretext_full/seed_{seed}/pretrain")),
    ("default", Row("default", "default_fast_graph", "0-4", "f7799a9",
                    f"{RUN} --config=configs/default.py --seeds=0-4 "
                    "--out=experiments/results/default_fast_graph",
                    note="2026-12-07, a faster machine than the rows before it")),
    ("default_2026_11", Row(
        "default (before the graph's speed-ups)", "archive/default_before_graph_speedups", "0-4",
        "3807c99", f"git checkout 3807c99 && {RUN} --config=configs/default.py --seeds=0-4 "
        "--out=experiments/results/archive/default_before_graph_speedups", status="superseded",
        note="another, slower machine")),
    ("default_rotation_aux", _override_row(
        "default (rotation_aux.weight=0.5)", "default",
        "--config.rotation_aux.weight=0.5 --config.pretrain.rotation_aux.weight=0.5",
        "default_rotation_aux", "0-2", "a993086",
        note="the rotation pretext as an auxiliary loss in both rounds (issue 23)")),
    ("default_flexmatch_rule", _override_row(
        "default (consistency_rule=flexmatch)", "default",
        "--config.propagate.consistency=1.0 --config.propagate.consistency_rule=flexmatch",
        "default_flexmatch_rule", "0-2", "f2ad6d9",
        note="round 2 with FlexMatch's rule beside the graph's labels (issue 23)")),
    ("default_reseed", Row(
        "default (re-seeding on)", "default_reseed", "0-2", "a60176b",
        f"{RUN} --config=configs/default.py --seeds=0-2 --out=experiments/results/default_reseed",
        note="the shipped config since re-seeding (issue 21); it never triggers on these draws")),
    # Issue 22: the two input pipelines (a short schedule), and a folder of
    # PNGs (experiments/export_folder.py) against the same images from TFDS.
    ("fixmatch_120_device", Row(
        "fixmatch (device pipeline)", "fixmatch_120_device", "0-2", "01c76b7",
        f"{RUN} --config=configs/fixmatch.py --config.num_steps=120 --seeds=0-2 "
        "--out=experiments/results/fixmatch_120_device", note="a short schedule")),
    ("fixmatch_120_tfdata", Row(
        "fixmatch (tf.data pipeline)", "fixmatch_120_tfdata", "0-2", "01c76b7",
        f"{RUN} --config=configs/fixmatch.py --config.num_steps=120 "
        "--config.data.pipeline=tfdata --seeds=0-2 --out=experiments/results/fixmatch_120_tfdata",
        note="a short schedule")),
    ("supervised_folder", Row(
        "supervised (MNIST as a folder)", "supervised_folder", "0-2", "01c76b7",
        f"{RUN} --config=configs/supervised.py --config.data.name=folder "
        "--config.data.dir=/tmp/mnist_folder --seeds=0-2 --out=experiments/results/supervised_folder",
        dataset="folder:mnist",
        note="after python experiments/export_folder.py --name=mnist --out=/tmp/mnist_folder")),
    ("supervised_tfds_same_code", Row(
        "supervised (the same draws from TFDS)", "supervised_tfds_same_code", "0-2", "01c76b7",
        f"{RUN} --config=configs/supervised.py --seeds=0-2 "
        "--out=experiments/results/supervised_tfds_same_code",
        note="the code of the folder rows, for comparison")),
    ("default_folder", Row(
        "default (MNIST as a folder)", "default_folder", "0", "01c76b7",
        f"{RUN} --config=configs/default.py --config.data.name=folder "
        "--config.data.dir=/tmp/mnist_folder --seeds=0 --out=experiments/results/default_folder",
        dataset="folder:mnist", note="the TFDS run of draw 0: default_reseed")),
    ("default_im2col", Row(
        "default (im2col gradient)", "archive/default_im2col_grad", "0-4", "86e1227",
        f"{RUN} --config=configs/default.py --config.model.kernel_grad=auto --seeds=0-4 "
        "--out=experiments/results/archive/default_im2col_grad", status="superseded")),
    ("default_im2col_5_9", Row(
        "default (im2col gradient)", "archive/default_im2col_grad_seeds_5_9", "5-9", "871aca6",
        f"{RUN} --config=configs/default.py --config.model.kernel_grad=auto --seeds=5-9 "
        "--out=experiments/results/archive/default_im2col_grad_seeds_5_9", status="superseded")),
    ("default_im2col_10_14", Row(
        "default (im2col gradient)", "archive/default_im2col_grad_seeds_10_14", "10-14",
        "eb36591",
        f"{RUN} --config=configs/default.py --config.model.kernel_grad=auto --seeds=10-14 "
        "--out=experiments/results/archive/default_im2col_grad_seeds_10_14",
        status="superseded", note="draws never used in development")),
    ("default_im2col_0_14", Row(
        "default (im2col gradient)", "archive/default_im2col_grad+archive/"
        "default_im2col_grad_seeds_5_9+archive/default_im2col_grad_seeds_10_14", "0-14",
        "86e1227", "the three rows above, pooled", status="superseded")),
    ("default_before_refine", Row(
        "default (before refine)", "archive/default_before_refine", "0-4", "b815d43",
        f"git checkout 4ea35a0 && {RUN} --config=configs/default.py --seeds=0-4 "
        "--out=experiments/results/archive/default_before_refine", status="superseded")),
    ("default_before_refine_5_9", Row(
        "default (before refine)", "archive/default_before_refine_seeds_5_9", "5-9", "60cae9a",
        f"git checkout 4ea35a0 && {RUN} --config=configs/default.py --seeds=5-9 "
        "--out=experiments/results/archive/default_before_refine_seeds_5_9",
        status="superseded", note="draws not used in development")),
    ("default_before_refine_0_9", Row(
        "default (before refine)", "archive/default_before_refine+"
        "archive/default_before_refine_seeds_5_9", "0-9", "60cae9a",
        "the two rows above, pooled", status="superseded")),
    ("default_im2col_fashion_mnist", Row(
        "default (im2col gradient)", "archive/default_im2col_grad_fashion_mnist", "0-2",
        "3fab50a",
        f"{RUN} --config=configs/default.py --config.model.kernel_grad=auto "
        "--config.data.name=fashion_mnist --seeds=0-2 "
        "--out=experiments/results/archive/default_im2col_grad_fashion_mnist",
        dataset="fashion_mnist", status="superseded")),
    ("default_before_refine_fashion_mnist", Row(
        "default (before refine)", "archive/default_before_refine_fashion_mnist", "0-2",
        "1339ce3",
        f"git checkout 4ea35a0 && {RUN} --config=configs/default.py "
        "--config.data.name=fashion_mnist --seeds=0-2 "
        "--out=experiments/results/archive/default_before_refine_fashion_mnist",
        dataset="fashion_mnist", status="superseded")),
    ("supervised_all", Row("supervised:all", "supervised_all", "0-2", "6a2de20",
                           f"{RUN} --config=configs/supervised.py:all --seeds=0-2 "
                           "--out=experiments/results/supervised_all")),
    ("entropy_min", Row("entropy_min", "entropy_min", "0-2", "45d38e5",
                        f"{RUN} --config=configs/entropy_min.py --seeds=0-2 "
                        "--out=experiments/results/entropy_min")),
    ("supervised_fashion", Row(
        "supervised:fashion", "supervised_fashion_wide", "0-2", "008d1bd",
        f"{RUN} --config=configs/supervised.py:fashion --seeds=0-2 "
        "--out=experiments/results/supervised_fashion_wide", dataset="fashion_mnist",
        note="every label, augmented; goal 93.5%; seed 0 at 61f414b, the same config")),
    *((row.folders, row) for row in (
        _preset_row(*spec) for spec in [
          ("baselines", "fashion_mlp", "0-2", "e5c648b", "fashion_mnist",
           "every label; the blog: 87.6%"),
          ("baselines", "fashion_mlp64", "0-2", "e5c648b", "fashion_mnist",
           "every label; the blog: 87.1%"),
          ("baselines", "fashion_cnn", "0-2", "e5c648b", "fashion_mnist",
           "every label; the blog: 90.7%"),
          ("baselines", "course_mlp1", "0-2", "2e992e7", "mnist",
           "every label, standardised inputs; run on e5c648b with this commit's config"),
          ("baselines", "course_mlp2", "0-2", "2e992e7", "mnist",
           "every label, standardised inputs; goal 98.0%; run on e5c648b with this "
           "commit's config"),
          ("quadrants", "mlp1", "0-2", "e5c648b", "quadrants",
           "every label of 4,000 points; goal 99.5%"),
          ("quadrants", "mlp2", "0-2", "e5c648b", "quadrants",
           "every label of 4,000 points; goal 99.5%"),
          *(("quadrants", f"semi={m}", "0-4", "e5c648b", "quadrants",
             "one labeled point per class")
            for m in ("propagate", "entropy_min", "fixmatch", "mixmatch")),
      ])),
]}

# Each table: its kind and row ids. "full": every summary column; "configs":
# the launch command and the result; "commands": the run_seeds commands as a
# shell block; "manifest": each row's folders, seeds, commit and status;
# "file": the table an experiments/ script wrote (the path under
# experiments/results), for tables that are not one accuracy per draw.
TABLES: Dict[str, Tuple[str, Tuple[str, ...]]] = {
    "headline": ("full", ("default", "default_im2col_0_14", "supervised_all", "supervised",
                          "knn")),
    "configs": ("configs", ("default", "supervised",
                            "supervised_all", "knn", "fixmatch", "fixmatch:align",
                            "flexmatch", "freematch", "softmatch",
                            "mixmatch_800", "mixmatch_nomixup_800", "mixmatch_align",
                            "mixmatch_align_800", "mixmatch_align_nomixup_800", "simclr_knn",
                            "simclr_linear", "simclr_finetune", "simclr_propagate",
                            "pretext_full", "pretext_head", "pretext_alternate",
                            "entropy_min", "baselines_fashion_mlp", "baselines_fashion_mlp64",
                            "baselines_fashion_cnn", "supervised_fashion",
                            "baselines_course_mlp1",
                            "baselines_course_mlp2", "quadrants_mlp1", "quadrants_mlp2",
                            "quadrants_semi_propagate")),
    # The seed projects' systems (issue 20), beside the numbers they reported.
    "systems": ("full", ("baselines_fashion_mlp", "baselines_fashion_mlp64",
                         "baselines_fashion_cnn", "supervised_fashion", "baselines_course_mlp1",
                         "baselines_course_mlp2", "quadrants_mlp1", "quadrants_mlp2",
                         "quadrants_semi_propagate", "quadrants_semi_entropy_min",
                         "quadrants_semi_fixmatch", "quadrants_semi_mixmatch")),
    # experiments/mil.py and experiments/ensemble.py.
    "mil": ("file", ("mil/table.md",)),
    "ensemble_supervised_all": ("file", ("ensemble_supervised_all/table.md",)),
    "ensemble_supervised_all_15ep": ("file", ("ensemble_supervised_all_15ep/table.md",)),
    "ensemble_default": ("file", ("ensemble_default/table.md",)),
    # experiments/stress.py and experiments/proposer.py (issue 21): the first
    # propagation alone (--graph_only), then the whole recipe.
    "stress_graph": ("file", ("stress_default/graph_table.md",)),
    "stress_default": ("file", ("stress_default/table.md",)),
    "proposer_graph": ("file", ("proposer_default/graph_table.md",)),
    "proposer_default": ("file", ("proposer_default/table.md",)),
    "results": ("full", tuple(ROWS)),
    "commands": ("commands", tuple(ROWS)),
    "manifest": ("manifest", tuple(ROWS)),
}
