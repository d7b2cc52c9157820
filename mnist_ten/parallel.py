"""Data parallelism with jax.sharding: one 'data' mesh axis over all devices.

Parameters, optimizer state and the (small) datasets are replicated; each
step's batch is sharded along 'data'. The same code runs on 1 CPU, 1 GPU or
8 TPU cores: XLA inserts the gradient all-reduce.
"""
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

from mnist_ten.errors import ConfigError


def make_mesh() -> Mesh:
  return Mesh(np.asarray(jax.devices()), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P("data"))


def check_divisible(name: str, size: int, mesh: Mesh):
  if size % mesh.size:
    raise ConfigError(f"{name}={size} must be a multiple of the {mesh.size} devices")
