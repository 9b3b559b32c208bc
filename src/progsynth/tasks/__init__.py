"""progsynth.tasks: every task family behind one protocol (``common.Task``) and one registry
(``registry``): modular arithmetic, sparse parity and Boolean functions."""

from progsynth.tasks.common import DOMAINS, Task, TaskData
from progsynth.tasks.registry import FAMILIES, make_task, task_fields, task_from_dict, task_to_dict

__all__ = ["DOMAINS", "Task", "TaskData", "FAMILIES", "make_task", "task_fields", "task_from_dict", "task_to_dict"]
