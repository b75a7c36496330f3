"""What every CLI shares: user errors end in one line on stderr and exit status 2."""
from __future__ import annotations

import functools
import sys
from typing import Callable

# (module, class) of the errors a user's input can cause: matched by the modules already loaded,
# so a CLI imports none of them (nor torch) before it has parsed its arguments
USER_ERROR_TYPES = (("detect.config_parse", "ConfigError"),
                    ("detect.data.annotations", "DatasetError"),
                    ("detect.data.image_io", "ImageError"),
                    ("detect.tensor_files", "CheckpointError"),
                    ("detect.engine.trainer", "TrainingError"))


def is_user_error(e: BaseException) -> bool:
    """Whether ``e`` is one of `USER_ERROR_TYPES` (an error its module, loaded, defines)."""
    kinds = tuple(getattr(sys.modules[m], name) for m, name in USER_ERROR_TYPES if m in sys.modules)
    return isinstance(e, kinds)


def user_errors(main: Callable[..., int]) -> Callable[..., int]:
    """Turn known user errors into ``error: <message>`` and exit status 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except Exception as e:
            if not is_user_error(e):
                raise
            print(f"error: {e}", file=sys.stderr)
            return 2
    return wrapper
