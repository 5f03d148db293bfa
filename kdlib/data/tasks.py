"""Public entry to the task registry and to user data; importing it registers the embedded and the hub tasks."""

from distilsearch.kdlib.data import embedded_tasks, hub_tasks
from distilsearch.kdlib.data.task_registry import (
    DEFAULT_OOD_LIMIT,
    TASKS,
    TaskData,
    TaskDefinition,
    get_task_definition,
    load_task,
    register_task,
)
from distilsearch.kdlib.data.user_data import DataFileError, DataSpec, load_data

__all__ = [
    "DEFAULT_OOD_LIMIT",
    "TASKS",
    "DataFileError",
    "DataSpec",
    "TaskData",
    "TaskDefinition",
    "embedded_tasks",
    "get_task_definition",
    "hub_tasks",
    "load_data",
    "load_task",
    "register_task",
]
