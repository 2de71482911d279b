"""What the ``tools/`` scripts share: user errors become one ``error: ...`` line, not a traceback.

Exit codes: 0 ok, 1 the run failed (``TrainingError``: non-finite loss, broken task
contract), 2 a user mistake (config, paths, unknown names), 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from backbones.registry import OptionError, RegistryError
from tasks import distributed
from tasks.config import ConfigError
from tasks.data import worker_error_message
from tasks.engine import TrainingError
from tasks.images import DataError

# DataError: a bad annotation, mask or image is the user's data, not our bug
# OptionError covers ConfigError and the option checks inside backbones/ and heads/
USER_ERRORS = (OptionError, RegistryError, FileNotFoundError, NotImplementedError, DataError)


def run_tool(body: Callable[[], int]) -> int:
    """Run a tool's body; print user errors as ``error: ...``; always leave the process group."""
    try:
        return body()
    except USER_ERRORS as err:
        # a config mistake is the same on every torchrun rank: rank 0 says it, once
        if not (isinstance(err, ConfigError) and distributed.launched_rank() > 0):
            print(f"error: {worker_error_message(err)}", file=sys.stderr)
        return 2
    except TrainingError as err:  # agreed by all ranks (losses are all-reduced): rank 0 says it
        if distributed.launched_rank() == 0:
            print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:  # Ctrl-C: one line, not a traceback from where it landed
        if distributed.launched_rank() == 0:
            print(f"error: {err or 'interrupted'}", file=sys.stderr)
        return 130
    finally:
        distributed.cleanup()
