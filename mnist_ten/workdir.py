"""One writer per workdir, and logs that agree with the checkpoint a run resumes from.

`Lock` is an advisory `flock` on WORKDIR/.lock held for the run's life: the
OS drops it when its process ends, however it ends, so a dead process's lock
is never in the way, and the file names the process that holds it.
`cut_back` drops the log lines, metrics, evaluations and TensorBoard events
of steps after the restored checkpoint: they were computed by a sitting whose
later state was lost, and the resumed run computes them again.
"""
import datetime
import json
import os
import pathlib
import socket
import struct
import sys
from typing import Optional

from absl import logging

from mnist_ten.errors import WorkdirError

try:
  import fcntl  # pylint: disable=g-import-not-at-top
except ImportError:  # Windows: no advisory locks, runs are not guarded
  fcntl = None

LOCK_NAME = ".lock"


class Lock:
  """Holds WORKDIR/.lock while a run writes there; a second process is refused."""

  def __init__(self, workdir):
    self.path = pathlib.Path(workdir) / LOCK_NAME
    self._fd = None

  def __enter__(self):
    self.acquire()
    return self

  def __exit__(self, *exc):
    self.release()

  def acquire(self):
    if fcntl is None:
      return
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _describe(os.pread(fd, 4096, 0))
      os.close(fd)
      raise WorkdirError(
          f"workdir {str(self.path.parent)!r} is in use by {holder}: wait for it to end "
          "(or stop it), or use another --workdir") from None
    except OSError as e:  # a file system without locks (some network mounts)
      logging.warning("cannot lock %s (%s): nothing stops a second run in this workdir",
                      self.path, e.strerror)
      os.close(fd)
      return
    earlier = os.pread(fd, 4096, 0)
    if earlier.strip():
      # Its holder ended without releasing it (killed): the OS dropped the lock.
      logging.info("taking over the lock of %s, which is no longer running",
                   _describe(earlier))
    holder = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": datetime.datetime.now().isoformat(timespec="seconds"),
              "command": " ".join(sys.argv)[:500]}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(holder).encode(), 0)
    self._fd = fd

  def release(self):
    if self._fd is not None:
      os.ftruncate(self._fd, 0)  # an empty lock file: nobody holds it
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None


def write_json(path, obj):
  """Writes `obj` as JSON atomically: readers never see half a file."""
  path = pathlib.Path(path)
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_text(json.dumps(obj, indent=2, default=str))
  tmp.replace(path)


def _describe(raw: bytes) -> str:
  try:
    h = json.loads(raw.decode())
    return (f"process {h['pid']} on {h['host']} (started {h['started']}: "
            f"{h.get('command', '?')})")
  except (ValueError, KeyError, UnicodeDecodeError):
    return "another process"


def _read_events(path: pathlib.Path):
  """The serialised records of a TFRecord event file; a record cut short by
  a kill ends the file."""
  data, records, at = path.read_bytes(), [], 0
  while at + 12 <= len(data):
    (length,) = struct.unpack("<Q", data[at:at + 8])
    end = at + 12 + length + 4
    if end > len(data):
      break
    records.append(data[at + 12:at + 12 + length])
    at = end
  return records


def _cut_events(folder: pathlib.Path, step: int, final: bool):
  """Joins the event files into the oldest one, without events after `step`
  (nor, when `final`, the evaluations and figures of `step` itself)."""
  files = sorted(p for p in folder.glob("events.out.tfevents.*") if not p.name.endswith(".tmp"))
  if not files:
    return
  try:
    from tensorboard.compat.proto import event_pb2  # pylint: disable=g-import-not-at-top
    from tensorboard.summary.writer.record_writer import RecordWriter  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  kept = []
  for path in files:
    for record in _read_events(path):
      event = event_pb2.Event.FromString(record)
      if event.HasField("file_version") and kept:
        continue  # one header, the first file's
      if event.HasField("file_version") or event.step < step or (
          event.step == step and not (final and _evaluation(event))):
        kept.append(record)
  tmp = files[0].with_name(files[0].name + ".tmp")
  with open(tmp, "wb") as f:
    writer = RecordWriter(f)
    for record in kept:
      writer.write(record)
    writer.flush()
  tmp.replace(files[0])
  for path in files[1:]:
    path.unlink()


def _evaluation(event) -> bool:
  # The step's training scalars come in one event with the loss; evaluations
  # and figures come in others.
  return not any(v.tag == "loss" for v in event.summary.value)


def _cut_jsonl(path: pathlib.Path, step: int, drop_at_step=lambda record: False):
  if not path.exists():
    return
  kept = []
  for line in path.read_text().splitlines():
    try:
      record = json.loads(line)
      if record["step"] < step or (record["step"] == step and not drop_at_step(record)):
        kept.append(line + "\n")
    except (ValueError, KeyError, TypeError):
      continue  # a line cut short by a kill
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text("".join(kept))
  tmp.replace(path)


def _cut_log(path: pathlib.Path, step: int, sitting_start: Optional[int], final: bool):
  """log.txt: the earlier sittings' lines up to the first that reports a step
  after `step` (or, when `final`, its evaluation); this sitting's lines (from
  byte `sitting_start`) stay."""
  if not path.exists():
    return
  with open(path, "r+b") as f:
    data = f.read()
    start = len(data) if sitting_start is None else sitting_start
    earlier, this = data[:start].splitlines(keepends=True), data[start:]
    kept = []
    for line in earlier:
      text = line.decode(errors="replace")
      reported = _step_of_log_line(text)
      if reported is not None and (reported > step or (
          final and reported == step and " eval step " in text)):
        break
      kept.append(line)
    if len(kept) == len(earlier):
      return
    f.seek(0)
    f.write(b"".join(kept) + this)
    f.truncate()


def _step_of_log_line(text: str) -> Optional[int]:
  """The step a progress or evaluation line of train.py reports."""
  at = text.find(" step ")  # "step 200/1000 ...", "eval step 200: ..."
  if at < 0:
    return None
  word = text[at + 6:].split("/")[0].split(":")[0].split()[:1]
  return int(word[0]) if word and word[0].isdigit() else None


def cut_back(workdir, step: int, log_start: Optional[int] = None, final: bool = False):
  """Drops what the workdir's logs hold of steps after `step` (the checkpoint
  this sitting starts from): metrics.jsonl, evals.jsonl, TensorBoard events,
  and log.txt's earlier sittings (this one's lines start at byte `log_start`).
  final: `step` is the last, and its final evaluation is made again: the
  earlier one goes too."""
  workdir = pathlib.Path(workdir)
  _cut_jsonl(workdir / "metrics.jsonl", step,
             lambda record: final and "loss" not in record)
  _cut_jsonl(workdir / "evals.jsonl", step, lambda record: final)
  if (workdir / "tensorboard").is_dir():
    _cut_events(workdir / "tensorboard", step, final)
  _cut_log(workdir / "log.txt", step, log_start, final)
