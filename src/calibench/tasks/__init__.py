"""calibench.tasks: task items (multiple choice, facts, CLM text) from built-ins, files and HF names.

``load_task(name_or_path)`` is the one entry point; ``calibench.tasks.prompts`` turns items into
prompts for every confidence method. See docs/tasks.md for names and file formats.
"""

from calibench.tasks.base import CLMDoc, FactItem, MCItem, Task, content_hash
from calibench.tasks.load import load_task, register_task, task_names

__all__ = ["CLMDoc", "FactItem", "MCItem", "Task", "content_hash", "load_task", "register_task", "task_names"]
