"""What every CLI shares: user errors end in one line on stderr and exit status 2."""
from __future__ import annotations

import functools
import sys
from typing import Callable

from detect.config import ConfigError
from detect.data.annotations import DatasetError
from detect.data.image_io import ImageError
from detect.tensor_files import CheckpointError

USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, DatasetError, ImageError,
                                                CheckpointError)


def user_errors(main: Callable[..., int]) -> Callable[..., int]:
    """Turn known user errors into ``error: <message>`` and exit status 2."""
    from detect.engine.trainer import TrainingError

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except (*USER_ERRORS, TrainingError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
    return wrapper
