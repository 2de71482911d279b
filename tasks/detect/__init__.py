"""Object detection task: registers ``detect`` in ``tasks.base.TASKS`` on import."""

from tasks.detect.task import DetectTask

__all__ = ["DetectTask"]
