"""The generator's one error type: its message is the whole story, shown without a traceback."""


class GeneratorError(Exception):
    """Bad input or options; nothing was written."""
