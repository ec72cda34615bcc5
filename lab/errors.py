"""The one exception the CLI turns into a single line and a non-zero exit."""


class LabError(RuntimeError):
    """Something the user must fix; the message says what and how, in one line."""
