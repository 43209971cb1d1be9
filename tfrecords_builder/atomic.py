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
a live one's. A folder replacing an older one is swapped with it in one step (Linux
`renameat2(RENAME_EXCHANGE)`), so a reader never finds neither.

A folder written with a `kind` ("tfrecords", "index", ...) carries a marker file naming it, from
its first moment as a temporary: `check_target` lets `--overwrite` replace only a folder with the
same marker (an earlier output of the same tool, never a dataset or a user's folder). While it is
written, its temporary is also listed in a journal (`$TF_REID_STATE`, default
~/.cache/tf-reid/in-progress), so that the next run writing that kind, to any output, finds and
deletes a killed run's temporary (`remove_stale`).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import hashlib
import json
import os
import shutil
from typing import Iterator, Sequence

PARTIAL = ".partial-"
OLD = ".old-"
MARKER = ".tf-reid-output"  # {"kind": ...} in every folder written with a kind
STATE_ENV = "TF_REID_STATE"  # the journal's folder, if set


class OutputError(Exception):
    """Writing an output would lose data (an existing target, an input): one line naming the
    paths."""


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


def sha256_file(path: str) -> str:
    """The hex sha256 of a file's bytes (outputs record their files' checksums)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def remove(path: str) -> None:
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
    remove_stale(path)
    try:
        yield partial
        os.replace(partial, path)
    finally:
        remove(partial)  # after a successful rename there is nothing left to remove


@contextlib.contextmanager
def folder(path: str, replace: bool = True, temporary: str | None = None,
           kind: str | None = None) -> Iterator[str]:
    """Yields a new temporary folder beside `path`; on success it is renamed to `path`.

    The parent of `path` is created if needed. When the block raises (any exception,
    KeyboardInterrupt included), or publishing fails, the temporary folder is deleted and an
    existing `path` is left as it was.

    Args:
      path: the folder to publish.
      replace: what to do with an existing `path` when publishing. True: the new folder and
        the old one swap names in one step, then the old one is deleted (where the system
        cannot swap: the old one is renamed aside to `path.old-<pid>`, the new one renamed in,
        the old one deleted). False: never touch it; publishing fails with FileExistsError.
      temporary: where to build the folder instead of `temporary_name(path)` (e.g. a hidden name
        a server will not pick up); it must be on the same filesystem as `path`. A leftover of
        this process under that name is deleted first.
      kind: what the folder is ("tfrecords", "index", ...): the temporary starts with a marker
        file naming it (`is_output`) and is listed in the journal while it exists; killed
        runs' temporaries of this kind are deleted first (`remove_stale`).
    """
    path = os.path.normpath(path)
    partial = temporary or temporary_name(path)
    if kind is not None:
        remove_stale(path, kind)
    remove(partial)
    os.makedirs(partial)  # also creates the parent of `path`, the same as the temporary's
    entry = _journal_entry(partial) if kind is not None else None
    try:
        if kind is not None:
            with open(os.path.join(partial, MARKER), "w") as f:
                json.dump({"kind": kind}, f)
            _write_journal(entry, {"partial": os.path.abspath(partial), "kind": kind,
                                   "pid": os.getpid()})
        yield partial
        _publish(partial, path, replace)
    finally:
        remove(partial)  # after a successful rename there is nothing left to remove
        if entry is not None:
            remove(entry)


def journal_dir() -> str:
    """The folder listing the folder outputs being written (`$TF_REID_STATE` when set)."""
    return os.environ.get(STATE_ENV) or os.path.join(os.path.expanduser("~"), ".cache",
                                                     "tf-reid", "in-progress")


def _journal_entry(partial: str) -> str:
    digest = hashlib.sha256(os.path.abspath(partial).encode()).hexdigest()[:16]
    return os.path.join(journal_dir(), f"{digest}.json")


def _write_journal(entry: str, record: dict) -> None:
    """Best effort: an unwritable home must not stop a conversion (only the clean-up of its
    leftovers from elsewhere is lost)."""
    try:
        os.makedirs(os.path.dirname(entry), exist_ok=True)
        with open(entry, "w") as f:
            json.dump(record, f)
    except OSError:
        pass


def _exchange(a: str, b: str) -> bool:
    """Swaps two existing paths in one step; False where the system cannot (not Linux, an old
    kernel or a filesystem without RENAME_EXCHANGE)."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), a)


def _publish(partial: str, path: str, replace: bool) -> None:
    """Renames the finished folder `partial` to `path` (see `folder`)."""
    if not os.path.lexists(path):
        os.rename(partial, path)
        return
    if not replace:
        raise FileExistsError(f"{path}: exists; not replacing it")
    if _exchange(partial, path):
        return  # the old folder is now at `partial`, which `folder` deletes
    old = f"{path}{OLD}{os.getpid()}"
    remove(old)
    os.rename(path, old)
    try:
        os.rename(partial, path)
    except BaseException:
        os.rename(old, path)
        raise
    remove(old)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def is_output(path: str, kind: str) -> bool:
    """Whether the folder `path` carries the marker of an output of `kind`."""
    try:
        with open(os.path.join(path, MARKER)) as f:
            return json.load(f).get("kind") == kind
    except (OSError, ValueError, AttributeError):
        return False


def _within(path: str, folder: str) -> bool:
    """Whether `path` is `folder` or lies under it (symbolic links resolved)."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_target(path: str, overwrite: bool, inputs: Sequence[str] = (),
                 kind: str | None = None) -> None:
    """Refuses an output path whose writing would lose data; call it before writing anything.

    Args:
      path: the file or folder to write.
      overwrite: whether an existing `path` may be replaced.
      inputs: the command's input files and folders: `path` may neither be one nor hold one.
      kind: for a folder output, its kind (`folder`): an existing non-empty folder is replaced
        only when it carries the marker of that kind.

    Raises:
      OutputError: one line naming `path` (and the input or the missing marker).
    """
    for given in inputs:
        if given and os.path.lexists(given) and _within(given, path):
            what = "is" if _within(path, given) else "contains"
            raise OutputError(f"{path}: the output {what} the input {given}; not writing there")
    if not os.path.lexists(path):
        return
    if not overwrite:
        raise OutputError(f"{path}: output already exists (pass --overwrite to replace it)")
    if kind is not None and os.path.isdir(path) and os.listdir(path) and not is_output(path, kind):
        raise OutputError(f"{path}: exists and is not an earlier '{kind}' output of tf-reid (no "
                          f"{MARKER} marker in it); not replacing it")
    if kind is not None and not os.path.isdir(path):
        raise OutputError(f"{path}: exists and is not a folder; not replacing it")


def _leftovers(path: str, kind: str | None) -> list[tuple[str, int]]:
    """(temporary, pid) of `path` (`path.partial-<pid>`, `path.old-<pid>`), and with a `kind`
    also the marked folders of that kind under any name beside it."""
    pattern = (os.path.join(glob.escape(os.path.dirname(path) or "."), "*") if kind
               else glob.escape(path) + "*")
    found = []
    for candidate in glob.glob(pattern):
        for tag in (PARTIAL, OLD):
            stem, _, pid = candidate.rpartition(tag)
            pid = pid.split(".")[0]  # a suffix after the pid: "w.partial-12.weights.h5"
            if not stem or not pid.isdigit():
                continue
            if stem == path or (kind and os.path.isdir(candidate) and is_output(candidate, kind)):
                found.append((candidate, int(pid)))
    return found


def remove_stale(path: str, kind: str | None = None) -> list[str]:
    """Deletes killed runs' temporaries (`.partial-<pid>`, `.old-<pid>`) beside `path`; returns
    them, sorted.

    A run killed before it could clean up (SIGKILL, power loss) leaves its temporary output
    behind; a live run's, another process writing the same output, is kept. Without `kind`, only
    the temporaries of `path` itself; with it, also any folder beside `path` marked with that
    kind, and the journalled temporaries of that kind anywhere (a killed conversion to another
    output).
    """
    removed = []
    for candidate, pid in sorted(_leftovers(os.path.normpath(path), kind)):
        if not _pid_alive(pid):
            remove(candidate)
            removed.append(candidate)
    if kind is not None:
        removed += _remove_journalled(kind)
    return removed


def _remove_journalled(kind: str) -> list[str]:
    """Deletes the journalled temporaries of `kind` whose process is gone, wherever they are."""
    removed = []
    for entry in sorted(glob.glob(os.path.join(glob.escape(journal_dir()), "*.json"))):
        try:
            with open(entry) as f:
                record = json.load(f)
            if record["kind"] != kind or _pid_alive(int(record["pid"])):
                continue
        except (OSError, ValueError, KeyError, TypeError):
            continue  # another run's entry being written, or not ours
        if is_output(record["partial"], kind):  # still the killed run's temporary
            remove(record["partial"])
            removed.append(record["partial"])
        remove(entry)
    return removed
