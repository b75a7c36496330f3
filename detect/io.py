"""Files written atomically: a temporary file beside the target, flushed, synced, then renamed
over it. Readers see the old file or the new one, never a partial one; an interrupted write
leaves the old file and no temporary behind. Below every other module: checkpoints, configs,
predictions, metrics, exports, converted labels, dataset reports and charts are written through it
(appended logs, drawings and plots are not: they are views, rewritten by the next run)."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def _plain_file_mode() -> int:
    """What ``open(path, "w")`` would give a new file under this process's umask (mkstemp's
    temporary files are 0600)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(file_object)`` on a temporary file beside ``path``, then rename it over
    ``path`` (parent folders created). OSError propagates; the temporary file is removed."""
    path = Path(path)
    if path.parent.exists() and not path.parent.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path.parent))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _plain_file_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # the write's own error is the one to report
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path: str | Path, data: Any, indent: int | None = None) -> None:
    """JSON without NaN or infinities (``allow_nan=False``: a ValueError, as the format has none)."""
    atomic_write_text(path, json.dumps(data, indent=indent, allow_nan=False))
