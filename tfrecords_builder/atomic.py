"""Atomic output: write a file or folder under a temporary name beside it, rename it into place.

Every tf-reid output that someone may read while it is written, or that a crash must not leave
half-done (TFRecord folders, synthetic datasets, gallery indexes, SavedModel versions, workdir
JSON, features files, search results, converted weights), goes through `file` or `folder`:

  with atomic.file("runs/x/metrics.json") as tmp:      # tmp = "runs/x/metrics.json.partial-<pid>"
      with open(tmp, "w") as f:
          json.dump(metrics, f)
  # now metrics.json is the new file, whole; on an exception it is untouched and tmp is gone.

  with atomic.folder("data/market") as tmp:             # tmp = "data/market.partial-<pid>/"
      write_shards(tmp)

It lives in `tfrecords_builder`, the bottom package (it imports nothing from `tf_reid`), so both
packages can use it; it needs only the standard library.

The temporary name is the target plus `.partial-<pid>`: on the same filesystem, so the rename is
atomic, and tied to the writing process, so `remove_stale` can tell a crashed run's leftovers from
a live one's. Each caller keeps its own policy for an existing target (refuse, replace, or never
overwrite) and checks it before writing; these helpers only publish.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
from typing import Iterator

PARTIAL = ".partial-"


def temporary_name(path: str, suffix: str = "") -> str:
    """The temporary name of `path` for this process: `path.partial-<pid>`.

    Args:
      path: the output to write.
      suffix: an extension the writing library insists on (Keras's ".weights.h5", NumPy's
        ".npz"); it is kept last: "w.weights.h5" -> "w.partial-<pid>.weights.h5", and
        appended when `path` does not end with it ("out" -> "out.partial-<pid>.npz").
    """
    stem = path[:-len(suffix)] if suffix and path.endswith(suffix) else path
    return f"{stem}{PARTIAL}{os.getpid()}{suffix}"


def _remove(path: str) -> None:
    """Deletes a file, link or folder tree, if it exists."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


@contextlib.contextmanager
def file(path: str, suffix: str = "") -> Iterator[str]:
    """Yields a temporary path beside `path`; on success it replaces `path` in one rename.

    The block writes the temporary path (open it, or hand it to a library's save). When the block
    returns, the temporary file is renamed over `path` (`os.replace`: an existing file is
    replaced, and a reader sees the old file or the new one, never part of one). When the block
    raises (any exception, KeyboardInterrupt included), or the rename fails, the temporary file is
    deleted and `path` is untouched. The parent folder must exist.

    Args:
      path: the file to write.
      suffix: see `temporary_name` (for writers that require an extension).
    """
    path = os.path.normpath(path)
    partial = temporary_name(path, suffix)
    try:
        yield partial
        os.replace(partial, path)
    finally:
        _remove(partial)  # after a successful rename there is nothing left to remove


@contextlib.contextmanager
def folder(path: str, replace: bool = True, temporary: str | None = None) -> Iterator[str]:
    """Yields a new empty temporary folder beside `path`; on success it is renamed to `path`.

    The parent of `path` is created if needed. When the block raises (any exception,
    KeyboardInterrupt included), or publishing fails, the temporary folder is deleted and an
    existing `path` is left as it was.

    Args:
      path: the folder to publish.
      replace: what to do with an existing `path` when publishing. True: it is renamed aside to
        `path.old-<pid>`, the new folder renamed in, then the old one deleted (were the second
        rename to fail, the old folder is put back). False: never touch it; publishing fails
        with FileExistsError.
      temporary: where to build the folder instead of `temporary_name(path)` (e.g. a hidden name
        a server will not pick up); it must be on the same filesystem as `path`. A leftover of
        this process under that name is deleted first.
    """
    path = os.path.normpath(path)
    partial = temporary or temporary_name(path)
    _remove(partial)
    os.makedirs(partial)  # also creates the parent of `path`, the same as the temporary's
    try:
        yield partial
        _publish(partial, path, replace)
    finally:
        _remove(partial)  # after a successful rename there is nothing left to remove


def _publish(partial: str, path: str, replace: bool) -> None:
    """Renames the finished folder `partial` to `path` (see `folder`)."""
    if not os.path.lexists(path):
        os.rename(partial, path)
        return
    if not replace:
        raise FileExistsError(f"{path}: exists; not replacing it")
    old = f"{path}.old-{os.getpid()}"
    _remove(old)
    os.rename(path, old)
    try:
        os.rename(partial, path)
    except BaseException:
        os.rename(old, path)
        raise
    _remove(old)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_stale(path: str) -> list[str]:
    """Deletes `path.partial-<pid>` files or folders whose process is gone; returns them.

    A run killed before it could clean up (SIGKILL, power loss) leaves its temporary output
    behind; a live run's, another process writing the same output, is kept.
    """
    removed = []
    for partial in sorted(glob.glob(glob.escape(path) + PARTIAL + "*")):
        pid = partial[len(path) + len(PARTIAL):]
        if pid.isdigit() and not _pid_alive(int(pid)):
            _remove(partial)
            removed.append(partial)
    return removed
