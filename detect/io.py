"""Files written atomically: a temporary file beside the target, flushed, synced, then renamed
over it. Readers see the old file or the new one, never a partial one; an interrupted write
leaves the old file and no temporary behind. Below every other module (the engine, the data
reports, the exporters and the CLIs all write through it)."""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

FILE_MODE = 0o644  # what a plain `open(path, "w")` gives under the usual umask (mkstemp: 0600)


def atomic_write_bytes(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(file_object)`` on a temporary file beside ``path``, then rename it over
    ``path`` (parent folders created). OSError propagates; the temporary file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path: str | Path, data: Any, indent: int | None = None) -> None:
    """JSON without NaN or infinities (``allow_nan=False``: a ValueError, as the format has none)."""
    atomic_write_text(path, json.dumps(data, indent=indent, allow_nan=False))
