"""User-facing errors: the launcher prints their message alone, without a traceback."""


class MnistTenError(Exception):
  """Base class for errors caused by the user's input, not by a bug."""


class ConfigError(MnistTenError):
  """A config value or name is invalid."""


class DataError(MnistTenError):
  """A dataset cannot be found, read, or split as asked."""


class WorkdirError(MnistTenError):
  """The workdir holds something that conflicts with this run."""


class TrainingError(MnistTenError):
  """Training diverged (e.g. a NaN loss)."""
