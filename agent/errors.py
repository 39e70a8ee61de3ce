"""Exceptions of the agent package.

AgentError
  ConfigError    settings or a desired app config that cannot be used
  CommandError   a command that cannot run as asked (bad arguments, a failed step)
    UpdateError  a git update step failed; says whether and where it rolled back
"""


class AgentError(Exception):
    """Base of every error the agent raises on purpose."""


class ConfigError(AgentError):
    """Settings or a desired app config are invalid; the message says why."""


class CommandError(AgentError):
    """A command cannot run as asked, or one of its steps failed."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class UpdateError(CommandError):
    """A git update failed; `rolled_back_to` is the commit restored, if any."""

    def __init__(self, message: str, rolled_back_to: str | None = None) -> None:
        super().__init__(message)
        self.rolled_back_to = rolled_back_to
