"""Image classification task; importing this package registers ``"classify"`` in ``TASKS``."""

from tasks.classify.task import ClassifyTask

__all__ = ["ClassifyTask"]
