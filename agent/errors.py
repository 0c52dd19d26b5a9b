"""The agent's exception classes; each adapter turns library errors into one of these."""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error the agent raises on purpose."""


class ConfigError(AgentError):
    """The configuration file is missing, unreadable or invalid."""


class TransientError(AgentError):
    """A fault that may go away by itself: retry later. `retry_after`: seconds the server
    asked us to wait (HTTP Retry-After), at least that long before the next try."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(AgentError):
    """A fault of one file that retrying cannot fix."""


class UnparseableName(PermanentError):
    """The file name is not a recording name the agent knows."""


class DestinationDown(AgentError):
    """The whole destination refuses work (auth, host key, permission on the root, disk full)."""


class Interrupted(AgentError):
    """Work was abandoned because the agent is stopping."""
