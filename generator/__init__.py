"""Render workqueue-job chart values from a task list: `python -m generator tasks.txt`.

Small lists go inline in the values. Lists too big for a Helm release (stored in one 1 MiB
Secret) go into a separate manifest of ConfigMaps, each under the 1 MiB object limit, that the
user applies first; the values then point at them through `tasksFrom`.
"""

from .plan import GeneratorError, Options, generate

__all__ = ["GeneratorError", "Options", "generate"]
