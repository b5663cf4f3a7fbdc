"""The one exception type for mistakes a user can fix.

A :class:`UserError` carries a single line that names the input and the fix. The CLI prints it
and exits with status 2; it never shows a traceback for these.
"""


class UserError(Exception):
    """A problem with the user's input, settings or environment, with a one-line fix."""
