"""Data parallelism with jax.sharding: one 'data' mesh axis over all devices,
on one host or many.

Parameters, optimizer state, the labeled examples and the evaluation sets are
replicated; the unlabeled images are sharded along 'data' (each device, and so
each process, holds its slice) and so is each step's batch. The same code runs
on 1 CPU, 1 GPU, 8 TPU cores or a pod slice: XLA inserts the gradient
all-reduce and the collectives of the batch gather.

Several processes (one per host, or several on one host for testing) join
with `initialize` before anything else touches JAX; then every process runs
the same program on its own devices, and only process 0 writes files.
"""
import pathlib
from typing import Optional

from absl import logging
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

from mnist_ten.errors import ConfigError


def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None):
  """Joins a multi-process run through `jax.distributed.initialize`.

  With no arguments the cluster is detected (Cloud TPU pod slices, SLURM,
  Open MPI); on other machines give all three. On CPU the processes exchange
  gradients through gloo, JAX's CPU collectives.
  """
  given = [coordinator_address, num_processes, process_id]
  if any(v is not None for v in given) and any(v is None for v in given):
    raise ConfigError("a multi-process run needs all of coordinator_address, "
                      "num_processes and process_id (or none of them, to detect the cluster)")
  if num_processes is not None and not 0 <= process_id < num_processes:
    raise ConfigError(f"process_id={process_id} must be in [0, num_processes={num_processes})")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)


def use_compilation_cache(setting: str, default_dir):
  """JAX's persistent compilation cache in `setting` (a folder; "" for
  `default_dir`; "off" for none): compiled steps are kept across processes,
  so the second run of a config skips compiling. A folder that cannot be
  made costs a warning, not the run."""
  if setting == "off":
    return
  path = pathlib.Path(setting or default_dir).expanduser()
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    logging.warning("compilation cache %s unavailable (%s): compiling every run", path, e)
    return
  jax.config.update("jax_compilation_cache_dir", str(path))
  # Every program, not only those that took over a second to compile (JAX's
  # default): the evaluation and graph programs add up too.
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def is_main() -> bool:
  """The process that writes logs, tables and other files."""
  return jax.process_index() == 0


def make_mesh() -> Mesh:
  return Mesh(np.asarray(jax.devices()), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P("data"))


def check_divisible(name: str, size: int, mesh: Mesh):
  if size % mesh.size:
    raise ConfigError(f"{name}={size} must be a multiple of the {mesh.size} devices")


def put_replicated(tree, mesh: Optional[Mesh]):
  """Host values (or arrays from anywhere) -> copies on every device of `mesh`.

  Every process passes the same values; going through numpy lets arrays that
  live on another set of devices (a restored checkpoint, a local computation)
  join the mesh."""
  if mesh is None:
    return jax.tree.map(jax.numpy.asarray, tree)
  return jax.device_put(jax.tree.map(np.asarray, tree), replicated(mesh))


def put_sharded(array: np.ndarray, mesh: Optional[Mesh]):
  """A host array -> split along axis 0 over the mesh's devices, each process
  placing only its own slices. The caller pads axis 0 to a multiple of the
  mesh size (`pad_to_multiple`)."""
  if mesh is None:
    return jax.numpy.asarray(array)
  return jax.make_array_from_callback(array.shape, batch_sharded(mesh),
                                      lambda index: array[index])


def pad_to_multiple(array: np.ndarray, multiple: int) -> np.ndarray:
  """Pads axis 0 with zeros to a multiple of `multiple`. The padding rows
  must never be read: samplers draw indices below the true size."""
  extra = -array.shape[0] % multiple
  if not extra:
    return array
  return np.concatenate([array, np.zeros((extra,) + array.shape[1:], array.dtype)])
