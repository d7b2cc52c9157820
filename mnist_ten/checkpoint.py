"""Orbax checkpoints of the whole training state, for automatic resume.

Orbax writes each step into a temporary directory and renames it when
complete, so a process killed mid-save leaves the previous checkpoints intact
and the next run resumes from the latest complete one.
"""
import pathlib
from typing import Any, Optional

import flax.serialization
import jax
import orbax.checkpoint as ocp


def _restore_args():
  # Arrays saved on another set of devices (a 2-device run read by a 1-device
  # one, a GPU checkpoint on a laptop) come back on this process's first
  # device; callers place them where they need them.
  return ocp.args.StandardRestore(
      None, fallback_sharding=jax.sharding.SingleDeviceSharding(jax.local_devices()[0]))


class Checkpointer:

  def __init__(self, directory, *, keep: int = 2, read_only: bool = False):
    self.directory = pathlib.Path(directory)
    self._manager = ocp.CheckpointManager(
        pathlib.Path(directory).absolute(),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=not read_only, read_only=read_only,
            cleanup_tmp_directories=not read_only))

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, **extra):
    """Saves `state` (any flax-serialisable pytree) and scalar `extra` values."""
    item = {"state": flax.serialization.to_state_dict(state), **extra}
    self._manager.save(step, args=ocp.args.StandardSave(item))

  def restore(self, target: Any, step: Optional[int] = None):
    """Restores into the structure (and shardings) of `target`; returns
    (state, extra dict)."""
    step = self.latest_step() if step is None else step
    raw = self._manager.restore(step, args=_restore_args())
    state = flax.serialization.from_state_dict(target, raw.pop("state"))
    return state, raw

  def restore_raw(self, step: Optional[int] = None) -> dict:
    """The latest checkpoint as nested dicts of arrays, whatever made it."""
    step = self.latest_step() if step is None else step
    return self._manager.restore(step, args=_restore_args())["state"]

  def wait(self):
    self._manager.wait_until_finished()

  def close(self):
    self._manager.close()
