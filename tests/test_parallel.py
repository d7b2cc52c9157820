"""The same training step on 4 simulated CPU devices gives the result of 1 device."""
import json
import os
import subprocess
import sys

import numpy as np

from tests.conftest import ROOT

SCRIPT = """
import json, sys
import jax
import numpy as np
from tests.conftest import make_toy_arrays, write_idx
from mnist_ten import checkpoint, config as config_lib, train
idx_dir, workdir = sys.argv[1], sys.argv[2]
c = config_lib.base()
c.name, c.data.name, c.data.idx_dir = "toy", "toy", idx_dir
c.model = config_lib.model_config("lenet")  # batch norm: statistics over the global batch
c.batch_size, c.eval_batch_size = 16, 20
c.num_steps, c.log_every, c.eval_every, c.checkpoint_every = 4, 2, 4, 4
r = train.train_and_evaluate(c, workdir)
params = checkpoint.Checkpointer(workdir + "/checkpoints").restore_raw()["params"]
print(json.dumps({"devices": jax.device_count(), "acc": r["test_accuracy_raw"],
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
