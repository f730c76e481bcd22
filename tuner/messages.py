"""Exceptions as one-line messages (tuner reports every error on one line)."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def described(err: BaseException) -> str:
    """`Type: first line of the message`."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


class PipelineError(ValueError):
    """A pipeline, scheduler or device that cannot be used, with a one-line reason."""
