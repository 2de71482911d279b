"""Tasks (data + model + loss + metrics) and the shared engine that trains them.

Importing this package registers every task in ``TASKS``: one import line per task module.
"""

import os

# albumentations asks PyPI for its newest version on import: no network at run time.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from tasks import (  # noqa: E402 - after the environment is set
    classify,  # noqa: F401
    detect,  # noqa: F401
    segment,  # noqa: F401
    toy,  # noqa: F401 - registers "_toy", the engine's self-test task
)
from tasks.base import TASKS, Task
from tasks.loading import load_model

__all__ = ["TASKS", "Task", "load_model"]
