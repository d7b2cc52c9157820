"""Nearest-neighbour baseline on raw pixels: the labeled examples are the model.

Presets: quick (the same, it trains nothing), k=N (k nearest neighbours).
"""
from mnist_ten import config as config_lib


def get_config(arg=None):
  flags, options = config_lib.parse_arg(arg)
  config_lib.check_preset("knn", flags, options, ("quick",), ("k",))
  c = config_lib.base()
  c.name = "knn" + (f":{arg}" if arg else "")
  c.method = "knn"
  c.knn.k = int(options.get("k", 1))
  return c
