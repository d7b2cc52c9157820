"""The launcher as a user runs it: each config's quick preset end to end, and
one clear line (exit status 2, no traceback) for each kind of bad input."""
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

CONFIGS = sorted(p.stem for p in (ROOT / "configs").glob("*.py") if not p.stem.startswith("_"))
# Configs whose presets name one of several systems: a smoke run of each kind.
SYSTEMS = {"baselines": ["fashion_cnn", "course_mlp2"]}
# FixMatch's successors run their quick presets end to end on colour images
# (tests/test_train.py), through the same code as here.
ELSEWHERE = {"flexmatch", "freematch", "softmatch"}
# Every config's smoke run, and presets that change which stages run.
PRESETS = [f"{name}:quick" for name in CONFIGS if name not in {*SYSTEMS, *ELSEWHERE}] + [
    f"{name}:{system},quick" for name, systems in SYSTEMS.items() for system in systems] + [
        "simclr:quick,probe=propagate"]


def launch(*args, env=None):
  return subprocess.run([sys.executable, "launch.py", *args], cwd=ROOT, capture_output=True,
                        text=True, env={**os.environ, **(env or {})}, timeout=600)


# Presets whose run draws its figures here (seconds each; test_plots.py draws
# every figure on toy data).
PLOTTED = {"supervised:quick", "knn:quick"}


# Presets run through launch.py in a subprocess, as a user runs them; the others
# run the same config in this process (a subprocess costs ~10 s of start-up).
LAUNCHED = PLOTTED | {"default:quick"}


def _run_in_process(name, arg, workdir, data_overrides, plots):
  import importlib
  from mnist_ten import train
  config = importlib.import_module(f"configs.{name}").get_config(arg)
  for key, value in data_overrides.items():
    config.data[key] = value
  config.plots = plots
  train.train_and_evaluate(config, workdir)


@pytest.mark.parametrize("preset", PRESETS)
def test_quick_preset_runs_end_to_end(preset, tmp_path, mnist_data_overrides, monkeypatch):
  name, arg = preset.split(":", 1)
  cache = str(tmp_path.parent / "cache")
  if preset in LAUNCHED:
    overrides = [f"--config.data.{k}={v}" for k, v in mnist_data_overrides.items()]
    if preset not in PLOTTED:
      overrides.append("--config.plots=False")
    out = launch(f"--config=configs/{name}.py:{arg}", f"--workdir={tmp_path}", *overrides,
                 env={"MNIST_TEN_CACHE": cache})
    assert out.returncode == 0, out.stderr[-3000:]
  else:
    monkeypatch.setenv("MNIST_TEN_CACHE", cache)
    _run_in_process(name, arg, tmp_path, mnist_data_overrides, plots=preset in PLOTTED)
  plotted = {p.stem for p in (tmp_path / "plots").glob("*.png")}
  if preset == "supervised:quick":
    assert plotted == {"wrong_predictions", "confusion", "accuracy", "losses", "views",
                       "features"}
  elif preset == "knn:quick":
    assert plotted == {"wrong_predictions", "confusion"}  # no training, no encoder
  else:
    assert not (tmp_path / "plots").exists()
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["config"] == preset
  if name == "baselines":  # every label, of the system's own dataset
    assert results["dataset"] == ("fashion_mnist" if "fashion" in arg else "mnist")
    assert results["labeled_indices"] == "60000 indices, see split.json"
  elif name == "mil":  # every label of 100 training bags
    assert results["dataset"] == "mnist_bags" and len(results["labeled_indices"]) == 100
    assert 0.0 <= results["test_auc_ema"] <= 1.0
    assert 0.0 <= results["test_instance_auc_ema"] <= 1.0
  elif name == "quadrants":  # every label of 4,000 points
    assert results["dataset"] == "quadrants"
    assert results["labeled_indices"] == "4000 indices, see split.json"
  else:
    assert results["dataset"] == "mnist" and len(results["labeled_indices"]) == 10
  assert 0.1 <= results["test_accuracy_ema"] <= 1.0  # above chance is not asked of a smoke run
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["name"] == preset


@pytest.mark.parametrize("args, message", [
    (["--config=configs/supervised.py", "--config.optim.lrr=0.1"],
     'unknown or invalid key lrr Did you mean "lr"'),
    (["--config=configs/supervised.py", "--config.optim.lr=fast"], "could not convert"),
    (["--config=configs/supervised.py:quik"], "unknown preset(s) ['quik']"),
    (["--config=configs/no_such_config.py"], "cannot load --config=configs/no_such_config.py"),
    (["--config=configs/supervised.py", "--config.model.name=vgg"], "unknown model 'vgg'"),
    (["--config=configs/supervised.py", "--config.method=magic"], "unknown method 'magic'"),
    (["--config=configs/supervised.py", "--config.optim.name=lion"], "unknown optimizer 'lion'"),
    (["--config=configs/supervised.py", "--config.data.labels_per_class=7000"],
     "class 0 has only 5923"),
    (["--config=configs/supervised.py", "--config.data.label_seed=-1"],
     "data.label_seed=-1 must be a whole number >= 0"),
    (["--config=configs/supervised.py", "--num_processes=2", "--process_id=0"],
     "needs all of coordinator_address, num_processes and process_id"),
    (["--config=configs/supervised.py", "--coordinator_address=localhost:1",
      "--num_processes=2", "--process_id=2"], "process_id=2 must be in [0, num_processes=2)"),
])
def test_bad_input_gives_one_clear_line(args, message, tmp_path, mnist_data_overrides):
  overrides = [f"--config.data.{k}={v}" for k, v in mnist_data_overrides.items()]
  out = launch(*args, f"--workdir={tmp_path / 'run'}", *overrides,
               env={"MNIST_TEN_CACHE": str(tmp_path.parent / "cache")})
  assert out.returncode == 2
  assert "Traceback" not in out.stderr
  assert message in out.stderr, out.stderr[-2000:]


def test_missing_dataset_offline(tmp_path):
  out = launch("--config=configs/knn.py", f"--workdir={tmp_path / 'run'}",
               f"--config.data.data_dir={tmp_path / 'empty'}", "--config.data.download=False",
               env={"MNIST_TEN_CACHE": str(tmp_path / "cache")})
  assert out.returncode == 2 and "Traceback" not in out.stderr
  assert "could not be loaded" in out.stderr and str(tmp_path / "empty") in out.stderr
  assert not (tmp_path / "run").exists()  # nothing is written before the data is there
