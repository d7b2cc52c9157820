"""Exact nearest-neighbour search, the one implementation behind the `knn`
baseline, the `knn` evaluator and the graph (its kNN graph and its vote).

Two entry points: `knn_predict` runs inside a jit-compiled function (a
majority vote of the k nearest rows by L2 distance), `search` serves large
databases from the host, one chunk of queries at a time on the device.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np


def unit(x):
  """Rows scaled to unit length (numpy): on unit vectors the L2-nearest row
  is the cosine-nearest one."""
  return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)


def unit_jnp(x):
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True).clip(1e-12)


def knn_predict(train_x, train_y, query_x, *, k: int = 1, num_classes: int):
  """Majority vote of the k nearest train points (L2), ties to the nearest."""
  train_x = train_x.reshape((train_x.shape[0], -1)).astype(jnp.float32)
  query_x = query_x.reshape((query_x.shape[0], -1)).astype(jnp.float32)
  d2 = (jnp.sum(query_x ** 2, 1, keepdims=True) - 2 * query_x @ train_x.T
        + jnp.sum(train_x ** 2, 1)[None])
  _, nearest = jax.lax.top_k(-d2, k)
  # Votes weighted 1 + tiny rank bonus so that ties go to the closest class.
  weights = 1.0 + 1e-3 * (k - jnp.arange(k)) / k
  votes = jax.nn.one_hot(train_y[nearest], num_classes) * weights[None, :, None]
  return jnp.argmax(votes.sum(1), -1)


@functools.partial(jax.jit, static_argnames=("k", "exclude_self"))
def _top_k(block, start, database, *, k: int, exclude_self: bool):
  # The database is an argument, not a constant closed over: one compilation
  # serves every chunk, every call of the same shapes and every round.
  sims = block @ database.T
  if exclude_self:
    # Explicitly: duplicated images would otherwise make the first
    # neighbour ambiguous. Indices past the database (padding) are dropped.
    chunk = block.shape[0]
    sims = sims.at[jnp.arange(chunk), start + jnp.arange(chunk)].set(-jnp.inf)
  return jax.lax.top_k(sims, k)


def search(queries: np.ndarray, database: np.ndarray, k: int, *, chunk: int,
           exclude_self: bool = False):
  """Each query row's k most cosine-similar `database` rows: (similarities
  [N, k], indices [N, k]), best first. Exact, one chunk of queries at a time
  on device, the queries padded to whole chunks so that one compilation serves
  every chunk. exclude_self: the queries are the database's own rows, and row
  i never matches itself."""
  n = queries.shape[0]
  database = jnp.asarray(unit(np.asarray(database, np.float32)))
  queries = unit(np.asarray(queries, np.float32))
  queries = np.concatenate([queries, np.zeros((-n % chunk, queries.shape[1]), np.float32)])
  sims, idx = zip(*[jax.device_get(_top_k(jnp.asarray(queries[i:i + chunk]), i, database,
                                          k=k, exclude_self=exclude_self))
                    for i in range(0, queries.shape[0], chunk)])
  return np.concatenate(sims)[:n], np.concatenate(idx)[:n]
