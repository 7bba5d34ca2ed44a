"""Opening files a user names: regular files only, opened without blocking, with a size limit.

A FIFO, a character device (``/dev/zero``) or a directory given where a data, key, log or config file
is expected would block forever, never end, or fail deep inside a parser; each is refused up front
with one line naming the file and what it is.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from common.errors import FedcareError, printable

KIB = 1024
MIB = 1024 * KIB
SMALL_FILE_BYTES = 1 * MIB  # keys, certificates, manifests, site.yaml, adapter_config.json: far below this

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def open_regular(path: str | Path, what: str, max_bytes: int, error: type[FedcareError] = FedcareError) -> BinaryIO:
    """Open ``path`` for binary reading after checking it is a regular file of at most ``max_bytes``.

    The file is opened with ``O_NONBLOCK`` (a FIFO with no writer would otherwise block in ``open``)
    and checked with ``fstat`` on the opened descriptor, so a file swapped after the check is still caught.

    Args:
        path: The file the user named.
        what: What the file is for, for the message ("data file", "public key", ...).
        max_bytes: Largest accepted size.
        error: The exception class to raise (a FedcareError subclass).

    Raises:
        error: The file is missing, not a regular file, unreadable or too large; the message names it.
    """
    name = printable(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise error(f"{name} does not exist (expected a {what})") from None
    except ValueError:  # an embedded NUL character
        raise error(f"{name}: not a valid file name") from None
    except OSError as err:
        raise error(f"{name}: cannot open the {what} ({err.strerror or type(err).__name__})") from None
    try:
        info = os.fstat(fd)
        for test, kind in _KINDS:
            if test(info.st_mode):
                raise error(f"{name} is {kind}, not a regular file (expected a {what})")
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{name} is not a regular file (expected a {what})")
        if info.st_size > max_bytes:
            raise error(f"{name}: the {what} is {_size(info.st_size)}, over the limit of {_size(max_bytes)}")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(
    path: str | Path, what: str, max_bytes: int = SMALL_FILE_BYTES, error: type[FedcareError] = FedcareError
) -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` (see :func:`open_regular`).

    Raises:
        error: as :func:`open_regular`, or when the file grows past the limit while it is read.
    """
    with open_regular(path, what, max_bytes, error) as handle:
        try:
            data = handle.read(max_bytes + 1)
        except OSError as err:
            raise error(f"{printable(path)}: cannot read the {what} ({err.strerror or type(err).__name__})") from None
    if len(data) > max_bytes:
        raise error(f"{printable(path)}: the {what} is over the limit of {_size(max_bytes)}")
    return data


def _size(n: int) -> str:
    return f"{n / MIB:.1f} MiB" if n >= MIB else f"{n} bytes"


def make_private_dir(path: str | Path, what: str) -> Path:
    """Create a folder (0700 where it is new) that this process can write to, or refuse in one line.

    Args:
        path: The folder; "" is refused (it would mean the current folder, e.g. for private keys).
        what: The option or key that named it, for the message ("--out", "output_dir").

    Raises:
        FedcareError: The path is empty, is a file, is too long, or cannot be created or written.
    """
    if not str(path):
        raise FedcareError(f"{what}: an empty path is not a folder; name one")
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        probe = folder / f".fedcare-write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except FileExistsError:
        raise FedcareError(f"{what}: {printable(folder)} exists and is not a folder") from None
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise FedcareError(f"{what}: cannot write to {printable(folder)} ({reason})") from None
    return folder
