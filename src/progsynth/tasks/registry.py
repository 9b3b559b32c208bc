"""The task registry: every task family by name, and tasks to and from ``config.json``.

The only way the rest of progsynth reaches a task: ``make_task(family, **fields)`` builds one,
``task_to_dict`` / ``task_from_dict`` write and read the ``"task"`` entry of ``config.json``
(``{"family": ..., **fields}``). A config written before families existed has no ``family`` key and
reads as ``"modular"``, so old runs still open. Register a new family in ``FAMILIES`` and it trains
with ``progsynth train`` and opens in every analysis (an analysis that does not apply to it says so).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from progsynth.errors import ConfigError
from progsynth.tasks.boolean_functions import BooleanTask
from progsynth.tasks.common import Task
from progsynth.tasks.modular import ModularTask
from progsynth.tasks.parity import ParityTask

__all__ = ["FAMILIES", "DEFAULT_FAMILY", "make_task", "task_fields", "task_to_dict", "task_from_dict", "is_task"]

FAMILIES: dict[str, type] = {cls.family: cls for cls in (ModularTask, ParityTask, BooleanTask)}
"""Every task family by its name (``Task.family``)."""

DEFAULT_FAMILY = "modular"
"""The family of a ``config.json`` task entry without a ``family`` key (configs written before families)."""


def _family(name: Any) -> type:
    if not isinstance(name, str) or name not in FAMILIES:
        raise ConfigError(f"unknown task family {name!r}; expected one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


def task_fields(family: str) -> tuple[str, ...]:
    """The fields a family's tasks have, in order: what ``config.json`` stores and the CLI sets."""
    return tuple(f.name for f in fields(_family(family)) if f.init)


def make_task(family: str = DEFAULT_FAMILY, **values: Any) -> Task:
    """A validated task of ``family`` with ``values`` for some of its fields (defaults for the rest).

    A field the family does not have is a ConfigError naming it and listing the family's fields.
    """
    cls = _family(family)
    known = task_fields(family)
    unknown = [name for name in values if name not in known]
    if unknown:
        raise ConfigError(f"task field(s) {', '.join(map(repr, unknown))} do not apply to the {family} family; "
                          f"its fields are {', '.join(known)}")
    return cls(**values)


def is_task(value: Any) -> bool:
    """Whether ``value`` is a task of a registered family."""
    return type(value) in FAMILIES.values()


def task_to_dict(task: Task) -> dict[str, Any]:
    """``{"family": ..., **fields}``: the ``"task"`` entry of ``config.json``."""
    if not is_task(task):
        raise ConfigError(f"expected a task of one of the families {', '.join(FAMILIES)}, got {type(task).__name__}")
    return {"family": task.family, **{name: getattr(task, name) for name in task_fields(task.family)}}


def task_from_dict(data: Any) -> Task:
    """The task a ``config.json`` ``"task"`` entry describes (``DEFAULT_FAMILY`` when it names none)."""
    if not isinstance(data, dict):
        raise ConfigError(f"config key 'task' must be a mapping, got {data!r}")
    values = dict(data)
    return make_task(values.pop("family", DEFAULT_FAMILY), **values)
