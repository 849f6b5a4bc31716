"""Hardware errors: readers, cards, serial links. Part of the one tree rooted at PosemuError.

Backends translate their library's errors (pyscard, pyserial) into these at the boundary,
with a message that tells a user what happened and what to check.
"""

from __future__ import annotations

from protocol.errors import PosemuError


class HardwareError(PosemuError):
    """A reader, card or device link failed."""

    code = "hardware.error"


class ReaderError(HardwareError):
    """The card reader failed to do what was asked."""

    code = "reader.error"


class ServiceUnavailableError(ReaderError):
    """The reader service is not running (e.g. pcscd stopped: SCARD_E_NO_SERVICE)."""

    code = "reader.service_down"


class NoReaderError(ReaderError):
    """No such reader, or its driver is missing (SCARD_E_NO_READERS_AVAILABLE, unknown reader)."""

    code = "reader.absent"


class CardAbsentError(ReaderError):
    """No card in the reader, or it was removed during the operation (SCARD_W_REMOVED_CARD)."""

    code = "reader.card_removed"


class CardResetError(ReaderError):
    """The card was reset during the operation (brownout, another application: SCARD_W_RESET_CARD)."""

    code = "reader.card_reset"


class CardMuteError(ReaderError):
    """The card does not answer: no ATR, or no response to a command (SCARD_W_UNRESPONSIVE_CARD)."""

    code = "reader.card_mute"


class SharingViolationError(ReaderError):
    """Another program holds the card or reader exclusively (SCARD_E_SHARING_VIOLATION)."""

    code = "reader.busy"


class TransmissionError(ReaderError):
    """Bytes between reader and card were corrupted beyond retry (parity errors, bad procedure byte)."""

    code = "reader.transmission"


class LinkError(HardwareError):
    """A byte link (serial port, pty) failed."""

    code = "link.error"


class PortBusyError(LinkError):
    """The serial port is held by another program."""

    code = "serial.busy"
