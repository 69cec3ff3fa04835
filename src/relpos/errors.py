"""User-facing errors.

Every mistake a user can make (a bad path, a misspelled key, a recording that is too short) raises
:class:`RelposError` with one sentence that says what was wrong, the value received and what is
allowed. The CLI prints that sentence and exits with status 2; it never shows a traceback for them.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterable


class RelposError(Exception):
    """An error caused by the user's input, with a message meant to be read by that user."""


class ConfigError(RelposError):
    """A configuration key or value is not valid."""


class DataError(RelposError):
    """Input data cannot be used (missing, unreadable, too small, empty)."""


class OutputError(RelposError):
    """A result cannot be written where it should go (a file in place of a folder, no permission)."""


class PluginError(RelposError):
    """A plugin is broken, duplicated or unknown."""


class TrainingError(RelposError):
    """Training had to stop (e.g. the loss became NaN or infinite, or memory ran out)."""


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest choice, or ``""`` when nothing is close."""
    matches = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.5)
    return f" Did you mean '{matches[0]}'?" if matches else ""


def unknown_name(kind: str, value: str, choices: Iterable[str]) -> str:
    """Format the message for an unknown name, with a suggestion and the list of valid names."""
    choices = sorted(choices)
    listed = ", ".join(repr(c) for c in choices) if choices else "none are installed"
    return f"Unknown {kind} {value!r}.{did_you_mean(value, choices)} Available: {listed}."


def printable(text: str) -> str:
    """``text`` with every character a terminal would act on escaped as Python writes it in a repr.

    File names, channel names and annotations come from the user's files and may hold newlines,
    carriage returns or terminal escape sequences (``\x1b[2J`` clears the screen); printed raw they
    would forge lines or rewrite the terminal. ``"a\nb\x1b[31m"`` becomes ``a\\nb\\x1b[31m``, so the
    name stays readable and on one line. Printable characters, any script's letters included, stay.
    """
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def warn(message: str) -> None:
    """Tell the user something was skipped or adjusted, in one ``relpos: warning:`` line on stderr."""
    print(f"relpos: warning: {printable(message)}", file=sys.stderr)
