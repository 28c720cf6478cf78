"""Writing files so that readers never see half of one, and one run per model_dir.

Atomic writes go to a temporary file beside the target, which is flushed to disk
(fsync) and renamed over it; the folder is then synced too, so that after a crash or
a power cut the target holds either its old or its new content. The file gets the
mode any new file gets under the user's umask (0644 under umask 022), not the 0600
of a temporary file, so a TensorBoard or model server running as another user can
read it.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import secrets
import shutil
from typing import BinaryIO, Callable

from .errors import ModelDirBusy, WriteError

LOCK_FILE = ".lock"


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it: done once, at import,
    os.umask(mask)  # before other threads could create files meanwhile
    return mask


FILE_MODE = 0o666 & ~_read_umask()  # what open() gives a new file


def fsync_dir(directory: str) -> None:
    """Makes a rename or a new file in `directory` survive a power cut."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: str) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_tree(top: str) -> None:
    """Syncs every file and folder under `top` (before `top` is renamed into place)."""
    for root, _, names in os.walk(top):
        for name in names:
            fsync_file(os.path.join(root, name))
        fsync_dir(root)


# Temporary files and folders are named .tmp-<pid>-<random>-<final name>: never what a
# reader looks for, and the pid tells the next writer whether the one that left it lives.
TMP_PREFIX = ".tmp-"


def temp_path(path: str) -> str:
    """A temporary name beside `path`, for writing it and then renaming into place."""
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{name}")


def remove_leftovers(directory: str) -> None:
    """Removes the temporary files and folders in `directory` that a process which no
    longer runs left behind (killed mid-write); those of live writers stay."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        pid = name[len(TMP_PREFIX):].split("-", 1)[0]
        if not name.startswith(TMP_PREFIX) or not pid.isdigit() or _alive(int(pid)):
            continue
        path = os.path.join(directory, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


DISK_FULL = "the disk is full (no space left on device)"


def is_disk_full(error: Exception) -> bool:
    """Whoever raised it: an OSError, or TensorFlow's own error from a checkpoint or
    summary write, which says it only in its message."""
    return (getattr(error, "errno", None) == errno.ENOSPC
            or "No space left on device" in str(getattr(error, "message", error)))


def write_reason(error: Exception) -> str:
    """Why a write failed, in a few words; a full disk says so."""
    if is_disk_full(error):
        return DISK_FULL
    text = (error.strerror if isinstance(error, OSError) and error.strerror
            else str(getattr(error, "message", error))).strip()
    return text.splitlines()[0] if text else type(error).__name__


def write_error(path: str, error: Exception) -> WriteError:
    """One line naming the file the user knows, not its temporary name."""
    return WriteError(f"cannot write {path}: {write_reason(error)}")


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Writes `data` to `path` whole or not at all, with the umask's mode, durably.
    WriteError, naming `path`, if it cannot."""
    write_atomic(path, lambda f: f.write(data))


def write_atomic(path: str, write: Callable[[BinaryIO], object]) -> None:
    """Writes `path` whole or not at all: `write(f)` fills a temporary file beside it,
    which is synced and renamed over `path`. WriteError, naming `path`, on an OSError."""
    directory = os.path.dirname(os.path.abspath(path))
    remove_leftovers(directory)
    tmp = temp_path(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), FILE_MODE)
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(directory)
    except BaseException as e:
        # OSError, not only FileNotFoundError: on a read-only disk unlinking the file
        # that was never made fails with EROFS, which must not hide the first error.
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise write_error(path, e) from None
        raise


def write_text_atomic(path: str, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def strict_json(value):
    """`value` with every NaN or infinite float replaced by None (JSON's null): strict
    parsers reject the bare NaN and Infinity that json.dumps writes by default."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(item) for item in value]
    return value


def write_json_atomic(path: str, value) -> None:
    """`value` as strict JSON (strict_json), indented, written atomically."""
    write_text_atomic(path, json.dumps(strict_json(value), indent=2, allow_nan=False) + "\n")


def nearest_existing(path: str) -> str:
    """`path` itself if it exists, else the nearest folder above it that does (where it
    would be created)."""
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def check_writable(what: str, path: str, needed: int = 0) -> None:
    """WriteError, naming `path` as the user gave it (`what`: the flag, or words that
    say what it is), for a file or folder (created later if missing) that cannot be
    made because no file can be made in its folder, or whose disk has less than `needed`
    bytes free: before the work whose results would go there. A file is made there and
    removed (the permission bits alone tell nothing to root or on a read-only mount)."""
    folder = nearest_existing(path)
    if os.path.isfile(folder) and folder == os.path.abspath(path):
        folder = os.path.dirname(folder)  # a file to be replaced: its folder is written
    if not os.path.isdir(folder):
        raise WriteError(f"cannot write {what} {path}: {folder} is a file, not a folder")
    probe = temp_path(os.path.join(folder, "write-test"))
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as e:
        raise WriteError(f"cannot write {what} {path} ({write_reason(e)}): give a folder "
                         "you can write to") from None
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise WriteError(f"cannot write {what} {path}: it needs about "
                         f"{needed / 2**20:,.1f} MiB and its disk has {free / 2**20:,.1f} "
                         "MiB free: free some space, or give a folder on another disk")


def same_or_inside(path: str, folder: str) -> bool:
    """Whether `path` is `folder` or lies under it, links followed."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)



class ModelDirLock:
    """An OS lock (flock) on MODEL_DIR/.lock: exclusive while a run trains there, shared
    while a command reads the run (export), so that neither starts while the other runs.

    The kernel releases it when the process ends, however it ends, so a SIGKILL leaves
    no stale lock. The exclusive holder writes its process id into the file, for the
    refusal's message; a shared holder writes nothing, so a read-only run can be read.
    """

    def __init__(self, model_dir: str, what: str, shared: bool = False, enabled: bool = True):
        """what: the refused action, for the message, e.g. "exporting it". enabled=False:
        a lock that does nothing (a worker that does not write model_dir)."""
        self.model_dir = model_dir
        self.what = what
        self.shared = shared
        self.enabled = enabled
        self.fd = None

    def acquire(self) -> "ModelDirLock":
        if not self.enabled:
            return self
        path = os.path.join(self.model_dir, LOCK_FILE)
        if self.shared:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                return self  # no run ever trained here with a lock: none is training now
        else:
            os.makedirs(self.model_dir, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise ModelDirBusy(f"{self.model_dir} is in use by {holder(path)}: wait for it to "
                               f"finish, or stop it, before {self.what}") from None
        if not self.shared:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor releases the flock
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def holder(lock_path: str) -> str:
    """'process <pid> (<its command line>)' from the lock file, as far as it can be told:
    the pid there is the last exclusive holder's, named only while that process lives."""
    try:
        with open(lock_path) as f:
            pid = int(f.read().strip())
        os.kill(pid, 0)  # the last exclusive holder; a shared holder leaves no pid
    except (OSError, ValueError):
        return "another process"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        command = ""
    return f"process {pid}" + (f" ({command})" if command else "")
