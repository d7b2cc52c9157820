"""Seconds per phase of a run: where the whole run's time goes, not only the
steps' (data load, the graph's stages, compilation, steps, evaluations,
checkpoint writes, ...). The trainer writes them to results.json
(`phase_seconds`) and prints them at the end of every stage."""
import contextlib
import time
from typing import Dict


class Phases:
  """Named seconds, summed over calls, in the order first seen."""

  def __init__(self):
    self.seconds: Dict[str, float] = {}

  def add(self, name: str, seconds: float):
    self.seconds[name] = self.seconds.get(name, 0.0) + float(seconds)

  @contextlib.contextmanager
  def timed(self, name: str):
    start = time.perf_counter()
    try:
      yield
    finally:
      self.add(name, time.perf_counter() - start)

  def record(self, total: float) -> Dict[str, float]:
    """The phases, plus "other" (total minus their sum, when positive), rounded."""
    out = {k: round(v, 3) for k, v in self.seconds.items()}
    rest = total - sum(self.seconds.values())
    if rest > 0.0005:
      out["other"] = round(rest, 3)
    return out

  @staticmethod
  def format(record: Dict[str, float]) -> str:
    total = sum(record.values()) or 1.0
    return ", ".join(f"{k} {v:.1f} s ({100 * v / total:.0f}%)" for k, v in record.items())
