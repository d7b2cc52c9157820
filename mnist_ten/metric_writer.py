"""Scalars to `metrics.jsonl`, scalars and images to TensorBoard event files, without TensorFlow.

TensorBoard's `EventFileWriter` opens files through `tf.io.gfile`, which
imports TensorFlow when it is installed (seconds of start-up, and not there on
most GPU images), so events are framed with tensorboard's pure-Python
`RecordWriter` on a plain file. Without the `tensorboard` package, scalars
still go to `metrics.jsonl`.
"""
import json
import pathlib
import socket
import time
from typing import Dict

from absl import logging


class MetricWriter:

  def __init__(self, logdir, enabled: bool = True):
    self._enabled = enabled
    self._events = None
    if not enabled:
      return
    logdir = pathlib.Path(logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    self._jsonl = open(logdir / "metrics.jsonl", "a")
    try:
      from tensorboard.compat.proto import event_pb2, summary_pb2  # pylint: disable=g-import-not-at-top
      from tensorboard.summary.writer.record_writer import RecordWriter  # pylint: disable=g-import-not-at-top
    except ImportError:
      logging.warning("tensorboard is not installed: no event files, metrics.jsonl only")
      return
    self._pb = (event_pb2, summary_pb2)
    # One event file per run: a resumed run appends to it (workdir.cut_back
    # has dropped the steps after its checkpoint), so no curve steps back.
    folder = logdir / "tensorboard"
    folder.mkdir(exist_ok=True)
    existing = sorted(p for p in folder.glob("events.out.tfevents.*")
                      if not p.name.endswith(".tmp"))
    path = existing[0] if existing else (
        folder / f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}")
    self._events = RecordWriter(open(path, "ab"))
    if not existing:
      self._events.write(event_pb2.Event(wall_time=time.time(),
                                         file_version="brain.Event:2").SerializeToString())

  def write_scalars(self, step: int, scalars: Dict[str, float]):
    if not self._enabled:
      return
    self._jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
    self._jsonl.flush()
    if self._events is not None:
      event_pb2, summary_pb2 = self._pb
      summary = summary_pb2.Summary(value=[
          summary_pb2.Summary.Value(tag=k, simple_value=float(v)) for k, v in scalars.items()])
      self._events.write(event_pb2.Event(wall_time=time.time(), step=step,
                                         summary=summary).SerializeToString())
      self._events.flush()

  def write_image(self, step: int, tag: str, png: bytes):
    """A PNG image as a TensorBoard image summary (the run's plots)."""
    if not self._enabled or self._events is None:
      return
    event_pb2, summary_pb2 = self._pb
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    image = summary_pb2.Summary.Image(height=height, width=width, colorspace=4,
                                      encoded_image_string=png)
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, image=image)])
    self._events.write(event_pb2.Event(wall_time=time.time(), step=step,
                                       summary=summary).SerializeToString())
    self._events.flush()

  def close(self):
    if self._enabled:
      self._jsonl.close()
      if self._events is not None:
        self._events.close()
