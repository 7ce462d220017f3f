"""Errors a person may see. Each message names the problem and, where there is one, the fix."""


class WorkqueueError(Exception):
    """Base class: the CLI prints the message as one line and exits with ``exit_code``."""

    exit_code = 1


class ConfigError(WorkqueueError):
    """Bad flags, environment or arguments."""

    exit_code = 2


class TaskSourceError(WorkqueueError):
    """A task file that cannot be read as tasks."""

    exit_code = 2


class BrokerUnavailable(WorkqueueError):
    """The broker could not be reached within the connect timeout."""


class BrokerAuthError(WorkqueueError):
    """The broker refused our credentials."""


class SeedConflict(WorkqueueError):
    """The queue already holds a different task list."""


class ConnectionLost(WorkqueueError):
    """The broker connection dropped; deliveries held on it will be redelivered to someone."""


class TaskFailed(Exception):
    """Raised by a handler to fail the current item with a short reason."""
