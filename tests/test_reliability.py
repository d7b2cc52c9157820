"""Faults a user can cause, each ending in one message with what was on disk
kept: corrupt checkpoints, full and read-only disks, two processes on one
workdir, resumed logs, divergence, bad inference input, no network, and the
commands' shared error mechanism (issue 19; the other rows of its table are
in test_launch.py, test_train.py and test_experiments.py)."""
import errno
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import mnist_ten
from mnist_ten import checkpoint
from mnist_ten import datasets
from mnist_ten import errors
from mnist_ten import train
from mnist_ten import workdir as workdir_lib
from mnist_ten.errors import DiskError, InputError, TrainingError, WorkdirError
from tests.conftest import ROOT


def _params(workdir):
  ckpt = checkpoint.Checkpointer(pathlib.Path(workdir) / "checkpoints", read_only=True)
  try:
    return jax.tree.leaves(ckpt.restore_raw())
  finally:
    ckpt.close()


def _assert_same_params(a, b):
  for x, y in zip(_params(a), _params(b)):
    np.testing.assert_array_equal(x, y)


def _cut_short(step_dir: pathlib.Path):
  """Truncates the checkpoint's largest file, as a crash of the disk might."""
  biggest = max((p for p in step_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
  with open(biggest, "r+b") as f:
    f.truncate(biggest.stat().st_size // 3)


def _run_lines(path):
  return [json.loads(line) for line in path.read_text().splitlines()]


# --- a corrupt checkpoint costs one save --------------------------------------------------


def test_a_truncated_newest_checkpoint_is_set_aside_and_the_run_resumes_before_it(
    toy_config, tmp_path, caplog):
  train.train_and_evaluate(toy_config, tmp_path / "full")
  shutil.copytree(tmp_path / "full", tmp_path / "cut")
  (tmp_path / "cut" / "results.json").unlink()  # killed before the end
  _cut_short(tmp_path / "cut" / "checkpoints" / "6")
  caplog.set_level("WARNING")
  train.train_and_evaluate(toy_config, tmp_path / "cut")
  names = sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir())
  aside = [n for n in names if n.startswith("6.unreadable-")]
  assert len(aside) == 1 and "3" in names and "6" in names, names  # kept, not deleted
  assert f"set aside as {aside[0]}, resuming from checkpoint 3" in caplog.text
  _assert_same_params(tmp_path / "full", tmp_path / "cut")  # it cost one save
  assert json.loads((tmp_path / "cut" / "results.json").read_text())["test_accuracy_ema"] == (
      json.loads((tmp_path / "full" / "results.json").read_text())["test_accuracy_ema"])


def test_load_classifier_reads_the_newest_checkpoint_that_reads_and_names_it(toy_config, tmp_path):
  train.train_and_evaluate(toy_config, tmp_path)
  test = datasets.load(toy_config.data)
  assert mnist_ten.load_classifier(tmp_path).checkpoint == tmp_path / "checkpoints" / "6"
  _cut_short(tmp_path / "checkpoints" / "6")
  clf = mnist_ten.load_classifier(tmp_path)
  assert clf.checkpoint == tmp_path / "checkpoints" / "3"
  assert clf(test.test_images)[0].shape == (100,)
  assert (tmp_path / "checkpoints" / "6").exists()  # a reader sets nothing aside
  _cut_short(tmp_path / "checkpoints" / "3")
  with pytest.raises(WorkdirError, match=r"no checkpoint in .* can be read \(steps 6, 3; "):
    mnist_ten.load_classifier(tmp_path)
  # A run with no readable checkpoint refuses to start over on its own.
  (tmp_path / "results.json").unlink()
  with pytest.raises(WorkdirError, match="can be read"):
    train.train_and_evaluate(toy_config, tmp_path)
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["3", "6"]


def test_a_checkpoint_of_another_model_is_refused(toy_config, tmp_path):
  train.train_and_evaluate(toy_config, tmp_path / "a")
  toy_config.model.widths = (48,)
  train.train_and_evaluate(toy_config, tmp_path / "b")
  shutil.rmtree(tmp_path / "b" / "checkpoints")
  shutil.copytree(tmp_path / "a" / "checkpoints", tmp_path / "b" / "checkpoints")
  (tmp_path / "b" / "results.json").unlink()
  with pytest.raises(WorkdirError, match="do not fit this config's model"):
    train.train_and_evaluate(toy_config, tmp_path / "b")


# --- full and read-only disks -------------------------------------------------------------


def _fail_save_at(monkeypatch, bad_step):
  """Saving `bad_step` fails as Orbax does on a full disk: after its
  temporary folder is made."""
  real = checkpoint.ocp.CheckpointManager.save

  def save(self, step, *args, **kwargs):
    if step == bad_step:
      (pathlib.Path(self.directory) / f"{step}.orbax-checkpoint-tmp").mkdir()
      raise ValueError("RESOURCE_EXHAUSTED: Error writing \"state.params\" in OCDBT database: "
                       "No space left on device [os_error_code='28']")
    return real(self, step, *args, **kwargs)
  monkeypatch.setattr(checkpoint.ocp.CheckpointManager, "save", save)


def test_a_full_disk_while_saving_stops_cleanly_and_the_rerun_is_bit_identical(
    toy_config, tmp_path, monkeypatch):
  toy_config.num_steps, toy_config.checkpoint_every = 9, 3
  train.train_and_evaluate(toy_config, tmp_path / "full")
  _fail_save_at(monkeypatch, 6)
  with pytest.raises(DiskError, match=r"saving checkpoint 6 in .* failed: the disk is full: "
                     r"free space .*\. The checkpoints saved so far are kept: the same "
                     r"command then resumes from step 3"):
    train.train_and_evaluate(toy_config, tmp_path / "run")
  assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["3"]
  assert not (tmp_path / "run" / "results.json").exists()
  monkeypatch.undo()  # space freed
  train.train_and_evaluate(toy_config, tmp_path / "run")
  _assert_same_params(tmp_path / "full", tmp_path / "run")
  steps = lambda d: [r["step"] for r in _run_lines(tmp_path / d / "metrics.jsonl")]  # pylint: disable=unnecessary-lambda-assignment
  assert steps("run") == steps("full")


def _mount_tmpfs(path: pathlib.Path, size: str):
  path.mkdir(parents=True, exist_ok=True)
  out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True, text=True, check=False)
  if out.returncode:
    pytest.skip(f"cannot mount a tmpfs here ({out.stderr.strip()[:100]})")


def _umount(path):
  # Lazily: a file handle a library keeps open must not keep the mount alive.
  subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


@pytest.mark.skipif(sys.platform != "linux" or os.geteuid() != 0, reason="needs root to mount")
def test_a_real_full_disk_is_one_message_and_leaves_no_temporary_folder(
    toy_config, tmp_path, capfd):
  disk = tmp_path / "disk"
  _mount_tmpfs(disk, "600k")  # room for the logs and two checkpoints, not three
  try:
    toy_config.num_steps, toy_config.checkpoint_every, toy_config.keep_checkpoints = 30, 3, 5
    with pytest.raises(DiskError, match="the disk is full") as failure:
      train.train_and_evaluate(toy_config, disk / "run")
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Logging error" not in err, err[-2000:]
    left = sorted(p.name for p in (disk / "run" / "checkpoints").iterdir())
    assert left and not [n for n in left if "tmp" in n], left
    saved = checkpoint.Checkpointer(disk / "run" / "checkpoints", read_only=True)
    for step in left:  # what was saved before still reads
      saved.restore_raw(int(step))
    saved.close()
    assert "resumes from step" in str(failure.value)
    subprocess.run(["mount", "-o", "remount,size=20m", str(disk)], check=True)
    train.train_and_evaluate(toy_config, disk / "run")
    train.train_and_evaluate(toy_config, tmp_path / "full")
    _assert_same_params(tmp_path / "full", disk / "run")
  finally:
    _umount(disk)


@pytest.mark.skipif(sys.platform != "linux" or os.geteuid() != 0, reason="needs root to mount")
def test_a_read_only_disk_is_one_line_from_the_launcher(tmp_path, toy_idx_dir):
  disk = tmp_path / "ro"
  _mount_tmpfs(disk, "1m")
  try:
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    out = subprocess.run([sys.executable, "launch.py", "--config=configs/knn.py",
                          f"--workdir={disk / 'run'}", "--config.data.name=toy",
                          f"--config.data.idx_dir={toy_idx_dir}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "MNIST_TEN_CACHE": str(tmp_path / "cache")})
  finally:
    _umount(disk)
  assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
  assert "creating the workdir" in out.stderr and "the file system is read-only" in out.stderr


def test_a_read_only_workdir_is_one_message(toy_config, tmp_path, monkeypatch):
  """Where nothing can be mounted: the OS error a read-only disk raises."""
  real = pathlib.Path.mkdir

  def mkdir(self, *args, **kwargs):
    if str(self).startswith(str(tmp_path / "ro")):
      raise OSError(errno.EROFS, "Read-only file system", str(self))
    return real(self, *args, **kwargs)
  monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
  with pytest.raises(DiskError, match=r"creating the workdir .* failed \(.*ro/run\): the file "
                                      r"system is read-only: use a --workdir on a writable"):
    train.train_and_evaluate(toy_config, tmp_path / "ro" / "run")


# --- one writer per workdir ---------------------------------------------------------------

HOLD = """
import sys, time
sys.path.insert(0, sys.argv[2])
from mnist_ten import workdir
with workdir.Lock(sys.argv[1]):
  print("held", flush=True)
  time.sleep(600)
"""


def test_a_second_process_on_a_workdir_is_refused_and_a_dead_ones_lock_is_not(
    toy_config, tmp_path, caplog):
  run = tmp_path / "run"
  run.mkdir()
  holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run), str(ROOT)],
                            stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(WorkdirError, match=rf"workdir .* is in use by process {holder.pid} "
                                           r"on .*: wait for it to end"):
      train.train_and_evaluate(toy_config, run)
    assert sorted(p.name for p in run.iterdir()) == [".lock"]  # refused before writing
  finally:
    holder.send_signal(signal.SIGKILL)  # dies holding it: the OS drops the lock
    holder.wait()
  caplog.set_level("INFO")
  train.train_and_evaluate(toy_config, run)
  assert f"taking over the lock of process {holder.pid}" in caplog.text
  assert (run / "results.json").exists() and (run / ".lock").read_text() == ""


# --- logs agree with the checkpoint -------------------------------------------------------


def _event_steps(workdir):
  from tensorboard.compat.proto import event_pb2  # pylint: disable=g-import-not-at-top
  files = sorted((workdir / "tensorboard").iterdir())
  by_tag = {}
  for path in files:
    for record in workdir_lib._read_events(path):  # pylint: disable=protected-access
      event = event_pb2.Event.FromString(record)
      for value in event.summary.value:
        by_tag.setdefault(value.tag, []).append(event.step)
  return files, by_tag


def test_resumed_logs_hold_each_step_once_and_a_finished_run_is_reported(
    toy_config, tmp_path, caplog):
  toy_config.eval_every = 3
  train.train_and_evaluate(toy_config, tmp_path / "full")
  # Killed while saving step 6: its logs are written, its checkpoint is not.
  shutil.copytree(tmp_path / "full", tmp_path / "cut")
  shutil.rmtree(tmp_path / "cut" / "checkpoints" / "6")
  (tmp_path / "cut" / "results.json").unlink()
  with open(tmp_path / "cut" / "metrics.jsonl", "a") as f:
    f.write('{"step": 7, "lo')  # and a line cut short
  train.train_and_evaluate(toy_config, tmp_path / "cut")
  for name in ("metrics.jsonl", "evals.jsonl"):
    full = [r["step"] for r in _run_lines(tmp_path / "full" / name)]
    cut = [r["step"] for r in _run_lines(tmp_path / "cut" / name)]
    assert cut == full, name
  files, by_tag = _event_steps(tmp_path / "cut")
  assert len(files) == 1  # one event file, one curve per tag
  for tag, steps in by_tag.items():
    assert steps == sorted(set(steps)), (tag, steps)
  assert by_tag["loss"] == [2, 3, 4, 6]
  log = (tmp_path / "cut" / "log.txt").read_text()
  assert log.count("step 4/6") == 1 and log.count("eval step 6: per-class") == 1
  assert "resumed from step 3" in log

  # Finished: reported from results.json, nothing evaluated or rewritten.
  before = {p: p.read_bytes() for p in (tmp_path / "cut").rglob("*")
            if p.is_file() and p.name != "log.txt"}
  caplog.set_level("INFO")
  again = train.train_and_evaluate(toy_config, tmp_path / "cut")
  assert "has finished: test accuracy" in caplog.text
  assert again == json.loads((tmp_path / "cut" / "results.json").read_text())
  assert before == {p: p.read_bytes() for p in (tmp_path / "cut").rglob("*")
                    if p.is_file() and p.name != "log.txt"}
  # Asked to: evaluated again, its final evaluation replaced, not repeated.
  toy_config.reevaluate = True
  train.train_and_evaluate(toy_config, tmp_path / "cut")
  assert [r["step"] for r in _run_lines(tmp_path / "cut" / "evals.jsonl")] == [3, 6]
  _, by_tag = _event_steps(tmp_path / "cut")
  assert all(steps == sorted(set(steps)) for steps in by_tag.values())


# --- divergence ---------------------------------------------------------------------------


def test_divergence_names_its_exact_step_also_inside_a_scan(toy_config, tmp_path):
  toy_config.num_steps = toy_config.log_every = toy_config.checkpoint_every = 8
  toy_config.eval_every = 8
  toy_config.optim.lr, toy_config.optim.name = 1e30, "sgd"
  with pytest.raises(TrainingError) as one:
    train.train_and_evaluate(toy_config, tmp_path / "one")
  toy_config.steps_per_dispatch = 4
  with pytest.raises(TrainingError) as scanned:
    train.train_and_evaluate(toy_config, tmp_path / "scan")
  step = str(one.value).split(":")[0]
  assert step.startswith("training diverged at step ") and str(scanned.value).startswith(step)
  assert "No checkpoint was saved before it" in str(scanned.value)


# --- inference input ----------------------------------------------------------------------


def test_inference_input_is_checked_before_any_reshaping(toy_config, tmp_path):
  train.train_and_evaluate(toy_config, tmp_path)
  clf = mnist_ten.load_classifier(tmp_path)
  images = datasets.load(toy_config.data).test_images  # [100, 24, 24, 1] uint8
  expected = clf(images)[0]
  assert np.array_equal(clf(images.astype(np.float32), scale=255)[0], expected)
  cases = [
      (images.astype(np.float32), r"float images must lie in \[0, 1\], these lie in \[0, 255\]: "
                                  r"pass scale=255"),
      (images[:, :20], "takes 24x24 images, these are 20x24: resize them first"),
      (np.repeat(images, 3, axis=-1), "takes 1-channel images, these have 3: convert them"),
      (images[0, ..., 0], r"must be a batch \[N, 24, 24, 1\] or \[N, 24, 24\], got shape "
                          r"\[24, 24\]; for one image add a batch axis"),
      (images.astype(bool), "must be numbers"),
  ]
  for bad, message in cases:
    with pytest.raises(InputError, match=message):
      clf(bad)
  with pytest.raises(ValueError):  # InputError is a ValueError to library callers
    clf(images, scale=0)


# --- offline ------------------------------------------------------------------------------


def test_an_unprepared_dataset_without_network_fails_within_seconds(tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  if not datasets._unreachable(tfds.builder("cifar10", data_dir=tmp_path / "tfds")):  # pylint: disable=protected-access
    pytest.skip("the network is reachable here: TFDS would download cifar10")
  start = time.time()
  out = subprocess.run([sys.executable, "launch.py", "--config=configs/knn.py",
                        f"--workdir={tmp_path / 'run'}", "--config.data.name=cifar10",
                        f"--config.data.data_dir={tmp_path / 'tfds'}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "MNIST_TEN_CACHE": str(tmp_path / "cache")})
  assert time.time() - start < 60
  assert out.returncode == 2 and "Traceback" not in out.stderr
  assert "the network is unreachable" in out.stderr and "data.download=False" in out.stderr
  assert "copy cifar10.npz into the cache dir" in out.stderr  # the whole message
  assert not (tmp_path / "run").exists()


# --- one mechanism for every command ------------------------------------------------------


def test_guard_turns_user_errors_into_one_line_and_keeps_bugs_tracebacks(capsys):
  @errors.guard
  def disk_full():
    raise OSError(errno.ENOSPC, "No space left on device", "/runs/x/metrics.jsonl")

  with pytest.raises(SystemExit) as exit_:
    disk_full()
  assert exit_.value.code == 2
  assert capsys.readouterr().err == (
      "error: reading or writing a file failed (/runs/x/metrics.jsonl): the disk is full: "
      "free space (or use a --workdir on another disk)\n")

  @errors.guard
  def bug():
    raise RuntimeError("a bug of ours")

  with pytest.raises(RuntimeError, match="a bug of ours"):
    bug()


@pytest.mark.parametrize("args, message", [
    (["experiments/benchmark.py", "--time_to_accuracy_of=/nope"], "no folder /nope"),
    (["experiments/benchmark.py", "--shapes=huge"], "unknown shape(s) ['huge']"),
    (["experiments/pseudo_labels.py", "/nope"], "'/nope' holds no run"),
    (["experiments/summarize.py"], "name a table"),
    (["experiments/run_seeds.py", "--config=configs/knn.py", "--seeds=x", "--out=/tmp/x"],
     "--seeds='x': give label seeds as 0-4"),
])
def test_experiments_scripts_share_the_one_line_errors(args, message):
  out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 2, out.stderr[-2000:]
  assert "Traceback" not in out.stderr and message in out.stderr, out.stderr[-2000:]
