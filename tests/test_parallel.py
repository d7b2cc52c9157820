"""The same training on 4 simulated CPU devices gives the result of 1 device,
and 2 processes joined through jax.distributed give the result of 1."""
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np

from tests.conftest import ROOT

SCRIPT = """
import json, sys
import jax
import jax
import numpy as np
from tests.conftest import make_toy_arrays, write_idx
from mnist_ten import checkpoint, config as config_lib, input_pipeline, train
idx_dir, workdir = sys.argv[1], sys.argv[2]
c = config_lib.base()
c.name, c.data.name, c.data.idx_dir = "toy", "toy", idx_dir
c.model = config_lib.model_config("lenet")  # batch norm: statistics over the global batch
c.batch_size, c.eval_batch_size = 16, 20
c.num_steps, c.log_every, c.eval_every, c.checkpoint_every = 4, 2, 4, 4
r = train.train_and_evaluate(c, workdir)
setup = train.Setup(c)
data = input_pipeline.make_train_data(setup.dataset, setup.split, setup.mesh)
params = checkpoint.Checkpointer(workdir + "/checkpoints").restore_raw()["params"]
print(json.dumps({"devices": jax.device_count(), "acc": r["test_accuracy_raw"],
                  "num_unlabeled": data.num_unlabeled,
                  "unlabeled_rows_per_device": [s.data.shape[0] for s in
                                                data.unlabeled_images.addressable_shards],
                  "params": [np.asarray(x).ravel()[:50].tolist() for x in jax.tree.leaves(params)]}))
"""


def _run(devices, idx_dir, workdir):
  env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
  out = subprocess.run([sys.executable, "-c", SCRIPT, str(idx_dir), str(workdir)], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_four_devices_match_one(toy_idx_dir, tmp_path):
  one = _run(1, toy_idx_dir, tmp_path / "one")
  four = _run(4, toy_idx_dir, tmp_path / "four")
  assert one["devices"] == 1 and four["devices"] == 4
  for a, b in zip(one["params"], four["params"]):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  assert abs(one["acc"] - four["acc"]) <= 0.02
  # Each device holds a quarter of the unlabeled images (padded to 4 equal parts).
  n = one["num_unlabeled"]
  assert one["unlabeled_rows_per_device"] == [n]
  assert four["unlabeled_rows_per_device"] == [-(-n // 4)] * 4


def _launch(workdir, idx_dir, env, *extra):
  return subprocess.Popen(
      [sys.executable, "launch.py", "--config=configs/fixmatch.py:quick",
       "--config.data.name=toy", f"--config.data.idx_dir={idx_dir}",
       "--config.eval_batch_size=20", "--config.num_steps=8", "--config.log_every=4",
       "--config.checkpoint_every=4", "--config.eval_every=8",
       "--config.plots=False",  # figures are test_plots.py's; seconds in each process
       f"--workdir={workdir}", *extra],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _final_params(workdir):
  from mnist_ten import checkpoint
  ckpt = checkpoint.Checkpointer(workdir / "checkpoints", read_only=True)
  params = ckpt.restore_raw()["params"]
  ckpt.close()
  return [np.asarray(x) for x in jax.tree.leaves(params)]


def test_two_processes_match_one(toy_idx_dir, tmp_path):
  """FixMatch (unlabeled images split over the devices, batch norm over the
  global batch) in 2 processes of 1 CPU device each, joined through
  jax.distributed and gloo, equals 1 process with 2 devices."""
  base = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
  one = _launch(tmp_path / "one", toy_idx_dir,
                {**base, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
  assert one.wait(timeout=600) == 0, one.stdout.read()[-3000:]
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  two = [_launch(tmp_path / "two", toy_idx_dir,
                 {**base, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"},
                 f"--coordinator_address=localhost:{port}", "--num_processes=2",
                 f"--process_id={i}") for i in range(2)]
  outputs = [p.communicate(timeout=600)[0] for p in two]
  for p, out in zip(two, outputs):
    assert p.returncode == 0, out[-3000:]
  assert "2 devices" in outputs[0]
  # Only process 0 writes the run's files; both wrote the checkpoint together.
  results = [json.loads((tmp_path / name / "results.json").read_text())
             for name in ("one", "two")]
  assert results[0]["num_devices"] == results[1]["num_devices"] == 2
  assert abs(results[0]["test_accuracy_ema"] - results[1]["test_accuracy_ema"]) <= 0.02
  for a, b in zip(_final_params(tmp_path / "one"), _final_params(tmp_path / "two")):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
