"""qworker: runs qstack jobs. User code registers tasks with `@qworker.task`."""

from qworker.tasks import JobContext, task

__all__ = ["JobContext", "task"]
