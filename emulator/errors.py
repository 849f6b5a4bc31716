"""Terminal-side errors (part of the one tree rooted at :class:`protocol.errors.PosemuError`)."""

from __future__ import annotations

from protocol.errors import PosemuError


class TerminalError(PosemuError):
    """The terminal could not do what was asked."""


class StateError(TerminalError):
    """An event that the transaction state machine does not allow in its current state."""


class NotSignedOn(TerminalError):
    """A transaction was attempted before a successful sign-on."""


class TerminalLocked(TerminalError):
    """The terminal is locked (operator password tries exhausted)."""


class HostLinkError(TerminalError):
    """Talking to the host failed."""


class DnsError(HostLinkError):
    """The host name could not be resolved."""


class ConnectError(HostLinkError):
    """The TCP connection to the host could not be made (refused, unreachable, timed out)."""


class HostTimeout(HostLinkError):
    """The host did not answer within the response timeout."""


class LinkLost(HostLinkError):
    """The connection closed or broke while a response was awaited."""
