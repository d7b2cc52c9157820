"""User-facing errors, and the one way every command reports them.

An error the user can cause (a bad value, a full or read-only disk, a file
where a folder should be, a corrupt checkpoint, no network) ends the command
with one message and exit status 2 (`guard`); a bug still shows its traceback.
"""
import errno
import functools
import re
import sys
from typing import Optional


class MnistTenError(Exception):
  """Base class for errors caused by the user's input, not by a bug."""


class ConfigError(MnistTenError):
  """A config value or name is invalid."""


class DataError(MnistTenError):
  """A dataset cannot be found, read, or split as asked."""


class WorkdirError(MnistTenError):
  """The workdir holds something that conflicts with this run."""


class DiskError(WorkdirError):
  """A file could not be written or read: a full, read-only or forbidden disk."""


class InputError(MnistTenError, ValueError):
  """Images handed to a classifier have the wrong shape, type or range."""


class TrainingError(MnistTenError):
  """Training diverged (e.g. a NaN loss)."""


# errno -> what to do about it.
_DISK_ADVICE = {
    errno.ENOSPC: "the disk is full: free space (or use a --workdir on another disk)",
    errno.EDQUOT: "the disk quota is used up: free space (or use a --workdir on another "
                  "disk)",
    errno.EROFS: "the file system is read-only: use a --workdir on a writable disk",
    errno.EACCES: "permission denied: use a folder you may write to",
    errno.EPERM: "permission denied: use a folder you may write to",
    errno.ENOTDIR: "a file stands where a folder should be: name another path",
    errno.EISDIR: "a folder stands where a file should be: name another path",
    errno.ENOENT: "no such file or folder: check the path",
}
# Orbax and TensorStore report a failed write as a ValueError or a bare
# Exception whose text holds the OS error.
_OS_TEXT = {"No space left on device": errno.ENOSPC, "Disk quota exceeded": errno.EDQUOT,
            "Read-only file system": errno.EROFS, "Permission denied": errno.EACCES}


def disk_errno(e: BaseException) -> Optional[int]:
  """The errno of a disk failure (also one wrapped by Orbax or TensorStore),
  or None when `e` is not one."""
  if isinstance(e, OSError) and e.errno in _DISK_ADVICE:
    return e.errno
  text = str(e)
  code = re.search(r"os_error_code='?(\d+)", text)
  if code and int(code.group(1)) in _DISK_ADVICE:
    return int(code.group(1))
  return next((n for s, n in _OS_TEXT.items() if s in text), None)


def disk_error(e: BaseException, doing: str) -> Optional[DiskError]:
  """A DiskError saying what failed ("saving checkpoint 9 in runs/x") and what
  to do, or None when `e` is not a disk failure."""
  code = disk_errno(e)
  if code is None:
    return None
  where = f" ({e.filename})" if isinstance(e, OSError) and e.filename else ""
  return DiskError(f"{doing} failed{where}: {_DISK_ADVICE[code]}")


def message(e: BaseException) -> Optional[str]:
  """The one-message report of a user's error, or None for a bug."""
  if isinstance(e, MnistTenError):
    return str(e)
  disk = disk_error(e, "reading or writing a file")
  return str(disk) if disk else None


def fail(text: str):
  """Ends the command with `error: text` on stderr and exit status 2."""
  sys.stdout.flush()
  print(f"error: {text}", file=sys.stderr)
  sys.stderr.flush()
  sys.exit(2)


def guard(main):
  """Wraps a command's main function: a user's error becomes one message and
  exit status 2; anything else keeps its traceback."""

  @functools.wraps(main)
  def wrapped(*args, **kwargs):
    try:
      return main(*args, **kwargs)
    except Exception as e:  # pylint: disable=broad-except
      text = message(e)
      if text is None:
        raise
      fail(text)
  return wrapped
