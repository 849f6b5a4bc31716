"""The terminal's EMV contact kernel: from power-on to the first GENERATE AC (ARQC).

An ``async`` flow over a :class:`hardware.ports.CardReader` (any backend: ``sim://``,
``pcsc://``), taking dates from the :class:`hardware.clock.Clock`:

1. **Activation** — power on, parse the ATR (ISO/IEC 7816-3 §8, :mod:`hardware.atr`).
2. **Application selection** (EMV Book 1 §12) — SELECT ``1PAY.SYS.DDF01``; its FCI names the
   directory SFI, whose records list the card's applications (§12.3.2). If the PSE is
   missing (``6A82``) or anything about it fails, the terminal's AID list is tried one by one
   with SELECT first/next occurrence (§12.3.3). ``6A81`` means the card is blocked
   (:class:`CardBlockedError`, no fallback); ``6283`` marks a blocked application. Candidates
   are ordered by Application Priority Indicator (tag 87); an optional hook lets the
   cardholder choose (§12.4). The final SELECT or a GPO answered ``6985`` removes a
   candidate and selection starts again (Book 3 §10.1).
3. **Initiate application processing** (Book 3 §10.1) — GET PROCESSING OPTIONS with the PDOL
   (tag 9F38) filled from terminal data (Book 3 §5.4); response format 1 or 2.
4. **Read application data** (Book 3 §10.2) — READ RECORD over every AFL entry; each record
   must be one ``70`` template; redundant primitive objects or missing mandatory ones (5A,
   5F24, 8C) end the read with :class:`ChipReadError`.
5. **Processing restrictions** (Book 3 §10.4) — application version, usage control,
   effective and expiry dates → TVR bits. **Terminal risk management** (§10.6) — floor limit.
6. **Cardholder verification** (Book 3 §10.5, Annex C3) — the CVM list (8E) rule by rule:
   offline plaintext PIN (GET DATA 9F17, then VERIFY with the try counter: ``63Cx`` asks
   again with *x* tries left, ``6983`` or ``63C0`` → :class:`PinBlockedError`), online PIN
   (the PIN is collected and handed back for the ISO 8583 PIN block), signature, no CVM.
7. **Terminal action analysis** (§10.7) — TAC/IAC denial against the TVR → AAC request,
   otherwise ARQC; **GENERATE AC** with the CDOL1 (8C) data; an AAC answer raises
   :class:`CardDeclinedError`.

The result is a :class:`ChipRead` whose ``icc_data`` is the BER-TLV for ISO 8583 field 55.
:meth:`EmvKernel.complete` runs the second GENERATE AC with the host's answer (Book 3 §10.11)
and returns a :class:`Completion`.

The package is split along its seams: :mod:`emulator.emv.model` (types, errors, the kernel's
:class:`KernelConfig`), :mod:`emulator.emv.rules` (pure EMV rules, no I/O) and
:mod:`emulator.emv.kernel` (the flow over a reader). Everything public is re-exported here.

Card data never reaches a message: PANs are masked, track data and PINs are never shown,
and the APDU log replaces VERIFY's PIN block.
"""

from emulator.emv.kernel import EmvKernel, read_chip
from emulator.emv.model import (
    DEFAULT_AIDS,
    FIELD55_TAGS,
    MAX_COMMANDS,
    MAX_RESPONSE_DATA,
    MAX_VERIFY,
    PSE_NAME,
    ApduLogEntry,
    Candidate,
    CardBlockedError,
    CardDeclinedError,
    CardholderCancelledError,
    ChipRead,
    ChipReadError,
    Completion,
    CryptogramType,
    Cvm,
    EmvError,
    KernelConfig,
    NoApplicationError,
    PinBlockedError,
    PinEntry,
    TerminalAid,
    Transaction,
    TransactionType,
)

__all__ = [
    "DEFAULT_AIDS",
    "FIELD55_TAGS",
    "MAX_COMMANDS",
    "MAX_RESPONSE_DATA",
    "MAX_VERIFY",
    "PSE_NAME",
    "ApduLogEntry",
    "Candidate",
    "CardBlockedError",
    "CardDeclinedError",
    "CardholderCancelledError",
    "ChipRead",
    "ChipReadError",
    "Completion",
    "CryptogramType",
    "Cvm",
    "EmvError",
    "EmvKernel",
    "KernelConfig",
    "NoApplicationError",
    "PinBlockedError",
    "PinEntry",
    "TerminalAid",
    "Transaction",
    "TransactionType",
    "read_chip",
]
