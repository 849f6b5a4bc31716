"""Terminal-side errors (part of the one tree rooted at :class:`protocol.errors.PosemuError`)."""

from __future__ import annotations

from protocol.errors import PosemuError


class TerminalError(PosemuError):
    """The terminal could not do what was asked."""

    code = "terminal.error"


class StateError(TerminalError):
    """An event that the transaction state machine does not allow in its current state."""

    code = "terminal.state"


class HostLinkError(TerminalError):
    """Talking to the host failed."""

    code = "link.error"


class DnsError(HostLinkError):
    """The host name could not be resolved."""

    code = "dns.failed"


class ConnectError(HostLinkError):
    """The TCP connection to the host could not be made (refused, unreachable, timed out)."""

    code = "tcp.connect_failed"


class HostTimeout(HostLinkError):
    """The host did not answer within the response timeout."""

    code = "tcp.response_timeout"


class LinkLost(HostLinkError):
    """The connection closed or broke while a response was awaited."""

    code = "tcp.closed"


class JournalError(TerminalError):
    """The journal could not be written (disk full, read-only, damaged): nothing is sent without it."""

    code = "journal.error"
