"""The one exception type for mistakes a user can cause and fix."""


class RNNStudioError(Exception):
    """A problem the user can fix: the message says what went wrong and what to do next.

    The CLI prints it on one line and exits with code 2; the GUI shows it in a dialog.
    ``source`` names the plugin, file or model it came from, when there is one.
    """

    def __init__(self, message: str, *, source: str | None = None):
        super().__init__(message)
        self.source = source

    def __str__(self) -> str:
        msg = super().__str__()
        if self.source and not msg.startswith(self.source):
            return f"{self.source}: {msg}"
        return msg
