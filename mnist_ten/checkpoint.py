"""Orbax checkpoints of the whole training state, for automatic resume.

Orbax writes each step into a temporary directory and renames it when
complete, so a process killed mid-save leaves the previous checkpoints intact
and the next run resumes from the latest complete one. On top of that:

- a checkpoint that fails to read (a file cut short) is skipped for the newest
  one that reads, and set aside (renamed `N.unreadable-TIME`, never deleted)
  by a writer;
- a save that fails (a full or read-only disk) removes its temporary folder
  and raises one `DiskError`, the earlier checkpoints untouched.
"""
import contextlib
import gc
import logging as py_logging
import pathlib
import shutil
import sys
import threading
import time
from typing import Any, List, Optional, Tuple, Union

from absl import logging
import flax.serialization
import jax
import numpy as np
import orbax.checkpoint as ocp

from mnist_ten import errors
from mnist_ten.errors import WorkdirError


def _restore_args():
  # Arrays saved on another set of devices (a 2-device run read by a 1-device
  # one, a GPU checkpoint on a laptop) come back on this process's first
  # device; callers place them where they need them.
  return ocp.args.StandardRestore(
      None, fallback_sharding=jax.sharding.SingleDeviceSharding(jax.local_devices()[0]))


class _DropOrbaxErrors(py_logging.Filter):
  def filter(self, record):
    return not (record.levelno >= py_logging.ERROR and "orbax" in record.pathname)


class _DropMessage(py_logging.Filter):

  def __init__(self, text: str):
    super().__init__()
    self.text = text

  def filter(self, record):
    return self.text not in record.getMessage()


def _quiet_hook(*_):
  pass


@contextlib.contextmanager
def _quiet_failures():
  """Orbax's worker threads and coroutines print each failed write's
  traceback (dozens of them); the failure itself reaches the caller as one
  exception, so their echoes are dropped while it is handled."""
  saved = threading.excepthook, sys.unraisablehook
  drop = _DropOrbaxErrors()
  unretrieved = _DropMessage("never retrieved")  # asyncio's "Future exception was ..."
  logging.get_absl_logger().addFilter(drop)
  py_logging.getLogger("asyncio").addFilter(unretrieved)
  threading.excepthook, sys.unraisablehook = _quiet_hook, _quiet_hook
  failed = False
  try:
    yield
  except BaseException:
    failed = True
    gc.collect()  # finalises the failed write's coroutines while they are quiet
    raise
  finally:
    logging.get_absl_logger().removeFilter(drop)
    threading.excepthook = saved[0]
    # After a failure the last of them are collected at exit: keep those quiet too.
    sys.unraisablehook = _quiet_hook if failed else saved[1]
    if not failed:
      py_logging.getLogger("asyncio").removeFilter(unretrieved)


def _first_line(e: BaseException) -> str:
  # TensorStore appends its whole spec ("See full TensorStore details: ...").
  text = str(e).split(" See full TensorStore details")[0].strip()
  return (text.splitlines() or [type(e).__name__])[0][:160]


class Checkpointer:

  def __init__(self, directory, *, keep: int = 2, read_only: bool = False):
    self.directory = pathlib.Path(directory)
    self._read_only = read_only
    if not read_only:
      self._remove_tmp("*")
    quiet = _DropMessage("Given directory is read only")  # a reader means it
    logging.get_absl_logger().addFilter(quiet)
    try:
      self._manager = self._make_manager(directory, keep, read_only)
    finally:
      logging.get_absl_logger().removeFilter(quiet)

  @staticmethod
  def _make_manager(directory, keep, read_only):
    # Synchronous saves: a failed write (a full disk) is raised by `save`
    # itself, at the step that made it, not by some later call.
    return ocp.CheckpointManager(
        pathlib.Path(directory).absolute(),
        options=ocp.CheckpointManagerOptions(
            # A reader's options as Orbax sets them itself (it warns otherwise).
            max_to_keep=None if read_only else keep,
            save_interval_steps=0 if read_only else 1, create=not read_only,
            # Half-written folders are removed by __init__, synchronously: Orbax's
            # own clean-up runs in a thread that races any other writer's.
            read_only=read_only, cleanup_tmp_directories=False,
            enable_async_checkpointing=False))

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def all_steps(self) -> List[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, **extra):
    """Saves `state` (any flax-serialisable pytree) and scalar `extra` values;
    a write that fails leaves no temporary folder and raises a DiskError."""
    item = {"state": flax.serialization.to_state_dict(state), **extra}
    try:
      with _quiet_failures():
        self._manager.save(step, args=ocp.args.StandardSave(item))
    except Exception as e:  # pylint: disable=broad-except
      self._remove_tmp(step)
      disk = errors.disk_error(e, f"saving checkpoint {step} in {self.directory}")
      if disk is None:
        raise
      raise disk from None

  def _remove_tmp(self, step: Union[int, str]):
    """Removes the half-written folders of `step` ("*": of every step)."""
    if jax.process_index() == 0 and self.directory.is_dir():
      for tmp in self.directory.glob(f"{step}.orbax-checkpoint-tmp*"):
        shutil.rmtree(tmp, ignore_errors=True)

  def restore(self, target: Any, step: Optional[int] = None,
              fill_missing=()) -> Tuple[Any, dict]:
    """Restores into the structure (and shardings) of `target`; returns
    (state, extra dict, with the step read under "step", and the top-level
    keys of `fill_missing` that the checkpoint lacked, which keep the
    target's values, under "filled")."""
    raw, step = self.read(step)
    saved = raw.pop("state")
    filled = []
    if isinstance(saved, dict):
      for key, value in flax.serialization.to_state_dict(target).items():
        # Fields added since older checkpoints were written (TrainState's
        # method_state) start from the target's value.
        if key not in saved and key in fill_missing:
          saved[key] = value
          filled.append(key)
    state = flax.serialization.from_state_dict(target, saved)
    differ = [jax.tree_util.keystr(path) for (path, a), b in zip(
        jax.tree_util.tree_flatten_with_path(target)[0], jax.tree.leaves(state))
              if np.shape(a) != np.shape(b)]
    if differ:  # from_state_dict takes any shapes
      raise ValueError(f"checkpoint {step}'s shapes differ at {', '.join(differ[:3])}")
    return state, {**raw, "step": step, "filled": filled}

  def restore_raw(self, step: Optional[int] = None) -> dict:
    """The newest readable checkpoint as nested dicts of arrays, whatever made it."""
    return self.read(step)[0]["state"]

  def read(self, step: Optional[int] = None) -> Tuple[dict, int]:
    """(the whole saved item, its step): `step`, or the newest checkpoint
    that reads. Newer ones that do not read are skipped with a warning, and
    set aside when this checkpointer may write."""
    if step is not None:
      return self._read_one(step), step
    failures = []
    for candidate in reversed(self.all_steps()):
      try:
        raw = self._read_one(candidate)
      except Exception as e:  # pylint: disable=broad-except
        # TensorStore raises a bare Exception for a file cut short.
        failures.append((candidate, e))
        continue
      for bad, e in failures:
        self._set_aside(bad, e, candidate)
      return raw, candidate
    if failures:
      raise WorkdirError(
          f"no checkpoint in {self.directory} can be read (steps "
          f"{', '.join(str(s) for s, _ in failures)}; the newest: "
          f"{_first_line(failures[0][1])}). They are left as they are; delete the folder "
          "to start over, or restore it from a copy") from None
    raise WorkdirError(f"{self.directory} holds no complete checkpoint")

  def _read_one(self, step: int) -> dict:
    with _quiet_failures():
      return self._manager.restore(step, args=_restore_args())

  def _set_aside(self, step: int, e: BaseException, used: int):
    source = self.directory / str(step)
    if self._read_only or jax.process_index() != 0:
      logging.warning("checkpoint %s cannot be read (%s); using checkpoint %d instead",
                      source, _first_line(e), used)
      return
    target = self.directory / f"{step}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}"
    source.rename(target)
    logging.warning("checkpoint %s cannot be read (%s); set aside as %s, resuming from "
                    "checkpoint %d", source, _first_line(e), target.name, used)
    self._manager.reload()

  def wait(self):
    self._manager.wait_until_finished()

  def close(self):
    self._manager.close()
