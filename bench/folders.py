"""An output folder is the harness's alone: no writing or deleting through a symbolic link inside it, and one writer
at a time.

- **Links.** `refuse_links` is the one check that every write and delete under an output folder passes through (the
  atomic writers of `bench.results`, `make_folder`, `remove_tree`, `remove_file`): when the path, or a folder between
  the output folder and it, is a symbolic link, it raises a one-line `ConfigError` naming the link, before anything
  is written or deleted. The output folder itself may be a link (``--out`` on a scratch disk); only links inside it
  are refused. A path's output folder is the outermost folder on its path, as written, that holds the `.ntm-bench`
  mark, so a mark planted behind a link cannot make the link's target count as an output folder of its own.
- **The lock.** `output_lock` holds an advisory `fcntl.flock` on the folder's `.ntm-bench.lock` while `run` or
  `export` writes it; a second writer is refused in one line naming the holder (pid, host, since when), which the
  holder records in the file. The kernel releases a flock when its holder exits however it exits, so a lock left by
  a killed process never blocks, and the file's contents are read only to name a holder that really holds the lock.
  Worker processes that write run folders for the holder (the local pool, Ray) never take it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import socket
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from bench.errors import ConfigError

#: the file that marks a folder as an ntm-bench output folder
MARKER = ".ntm-bench"
#: the file in an output folder whose flock its one writer holds (`output_lock`)
LOCK_FILE = ".ntm-bench.lock"
#: the longest holder record read back from a lock file
_RECORD_BYTES = 4096


# ---- links --------------------------------------------------------------------------------------------------------

def output_root(path: str | Path) -> Path | None:
    """The output folder that `path` lies in (absolute), or None outside any: the outermost folder above it, on its
    path as written (links are not resolved), that holds the `.ntm-bench` mark."""
    root = None
    for folder in Path(os.path.abspath(path)).parents:
        if os.path.lexists(folder / MARKER):
            root = folder
    return root


def refuse_links(path: str | Path, root: str | Path | None = None) -> None:
    """Raise a one-line ConfigError naming the link when `path`, or a folder between the output folder `root` (by
    default the one `path` lies in, `output_root`) and it, is a symbolic link. Nothing to check outside an output
    folder, or below a part of the path that does not exist yet (it will be created as a plain folder)."""
    given = Path(path)
    absolute = Path(os.path.abspath(given))
    base = output_root(absolute) if root is None else Path(os.path.abspath(root))
    if base is None:
        return
    try:
        parts = absolute.relative_to(base).parts
    except ValueError:  # not inside it
        return
    current = base
    for depth, part in enumerate(parts, start=1):
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except (FileNotFoundError, NotADirectoryError):  # what the write or delete itself then fails on
            return
        if stat.S_ISLNK(mode):
            if root is None:
                shown, folder = _as_given(given, absolute, len(parts) - depth), _as_given(given, absolute, len(parts))
            else:
                shown, folder = Path(root, *parts[:depth]), Path(root)
            raise ConfigError(f"{shown}: is a symbolic link inside the output folder {folder}; ntm-bench never writes "
                              "or deletes through a link there (replace it with a plain folder or file)")


def _as_given(given: Path, absolute: Path, up: int) -> Path:
    """The folder `up` levels above `given` (`given` itself at 0), in the form the caller wrote it when that is
    plain, else absolute."""
    if ".." in given.parts or up > len(given.parts) - 1:
        return absolute.parents[up - 1] if up else absolute
    return given.parents[up - 1] if up else given


def refuse_links_within(root: str | Path, names: list[str] | tuple[str, ...], entries: bool = False) -> None:
    """`refuse_links` for each of `names` (paths relative to the output folder `root`, e.g. ``runs/<run_id>``);
    with `entries`, also for everything directly inside each of them that is a folder (a run folder is wholly the
    harness's)."""
    for name in names:
        path = Path(root, name)
        refuse_links(path, root)
        if entries and path.is_dir():
            for entry in sorted(path.iterdir()):
                refuse_links(entry, root)


def make_folder(path: str | Path) -> Path:
    """Create the folder `path` and its parents (`mkdir -p`), after `refuse_links`."""
    path = Path(path)
    refuse_links(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def remove_tree(path: str | Path, ignore_errors: bool = False) -> None:
    """Delete the folder `path` and everything in it (nothing when it does not exist), after `refuse_links`;
    `ignore_errors` as `shutil.rmtree` takes it."""
    path = Path(path)
    refuse_links(path)
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=ignore_errors)


def remove_file(path: str | Path) -> None:
    """Delete the file `path` (nothing when it does not exist), after `refuse_links`."""
    path = Path(path)
    refuse_links(path)
    try:
        path.unlink()
    except FileNotFoundError:
        pass


# ---- the lock -----------------------------------------------------------------------------------------------------

@contextmanager
def output_lock(folder: str | Path) -> Iterator[None]:
    """Hold the folder's writer lock while inside: a flock on ``folder/.ntm-bench.lock`` (created when missing), with
    this process's pid, host and start time written into the file for the message another writer gets. Raises a
    one-line ConfigError naming the holder when another process holds it. Released on every way out (the kernel
    releases it too when this process dies), leaving the file empty. `folder` must exist (claimed)."""
    folder = Path(folder)
    path = folder / LOCK_FILE
    refuse_links(path, folder)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise ConfigError(f"{path}: not a plain file; ntm-bench keeps its writer lock there (remove it)")
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise ConfigError(f"{folder}: another ntm-bench process ({_holder(descriptor)}) is writing this folder; "
                              "wait for it or stop it") from None
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "since": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, (json.dumps(record) + "\n").encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(descriptor, 0)  # no holder any more; closing releases the flock
    finally:
        os.close(descriptor)


_PLAIN = {"host": re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}"),
          "since": re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC")}


def _holder(descriptor: int) -> str:
    """``pid N on host H, since T`` from the record the lock's holder wrote; parts that are missing or not plain
    (the file is anyone's to write) are left out, so the message stays one safe line."""
    try:
        record = json.loads(os.pread(descriptor, _RECORD_BYTES, 0))
    except (OSError, ValueError):
        record = None
    if not isinstance(record, dict):
        return "its pid is not recorded yet"
    pid = record.get("pid")
    text = f"pid {pid}" if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else "pid unknown"
    host, since = (record.get(key) for key in ("host", "since"))
    if isinstance(host, str) and _PLAIN["host"].fullmatch(host):
        text += f" on host {host}"
    if isinstance(since, str) and _PLAIN["since"].fullmatch(since):
        text += f", since {since}"
    return text
