"""User-facing errors.

Anything a user can cause (a wrong path, a bad size, a checkpoint that does not fit) raises a subclass of
:class:`FlashI2VError` with a one-line message that says what is wrong and how to fix it. The CLI prints that line
and exits with status 2; library users can catch the class.
"""


class FlashI2VError(Exception):
    """Base class of every error caused by user input (files, options, shapes)."""


class CheckpointError(FlashI2VError):
    """A checkpoint is missing, unreadable, or does not match the model (missing/unexpected keys, shapes)."""


class ConfigError(FlashI2VError):
    """A model or run configuration is invalid."""


class InputError(FlashI2VError):
    """An input (image, video, prompt, size, frame count) is invalid."""
