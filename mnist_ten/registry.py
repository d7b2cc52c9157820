"""Name -> implementation registries (models, methods, optimizers, augmentations...).

Everything that varies between runs is named in the config and looked up here,
so adding a model or a method is adding a decorated function in one file.
"""
from typing import Callable, Dict, Generic, Iterator, TypeVar

from mnist_ten.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
  """A small name -> object map that refuses duplicate names."""

  def __init__(self, kind: str):
    self.kind = kind
    self._entries: Dict[str, T] = {}

  def register(self, name: str) -> Callable[[T], T]:
    def decorator(obj: T) -> T:
      if name in self._entries:
        raise ValueError(f"{self.kind} {name!r} is already registered")
      self._entries[name] = obj
      return obj
    return decorator

  def get(self, name: str) -> T:
    try:
      return self._entries[name]
    except KeyError:
      raise ConfigError(
          f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._entries))}"
      ) from None

  def __contains__(self, name: str) -> bool:
    return name in self._entries

  def __iter__(self) -> Iterator[str]:
    return iter(sorted(self._entries))
