"""The one exception tree of posemu.

Every error the project raises derives from :class:`PosemuError`. Layers add their own
subclasses (``hardware.errors``, ``emulator.errors``) but never root a second tree.

* :class:`DecodeError` — a peer (card, host, reader, file) sent bytes we cannot decode.
  It carries the field path (``"55.9F26"``, ``"track2.lrc"``), the byte position, the raw
  bytes and the partial result, like ``json.JSONDecodeError`` and pyiso8583's
  ``DecodeError``, and like both it is also a :class:`ValueError`. Its message shows the raw
  bytes as hex with PAN-like digit runs masked.
* :class:`EncodeError` — we were asked to build something invalid (local misuse).
* :class:`UsageError` / :class:`ConfigError` — the user asked for something invalid: an option
  value, an unknown id, a bad configuration, profile or scenario file (the CLI exits 2).
* :class:`EnvironmentProblem` — the machine cannot do what was asked although the request is
  fine: the state folder, a database, an output path or the reader service is unusable (exit 3).

All errors pickle (``__reduce__``), so they cross process boundaries intact.

Every error carries a stable **evidence code** (:attr:`PosemuError.code`, e.g. ``reader.atr_timeout``,
``pcsc.0x80100069``, ``tcp.refused``, ``mac.mismatch``): each class has a default and a raise site
may name the exact observation with :meth:`PosemuError.with_code`. Codes, not message wording, are
what the trace records and what the diagnosis matches, so rewording a message never breaks it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

from protocol.masking import mask_hex, mask_text


class PosemuError(Exception):
    """Root of every error posemu raises."""

    code: str = "posemu.error"
    """The stable evidence code of this error (class default; see :meth:`with_code`)."""

    def with_code(self, code: str) -> Self:
        """Name the exact observation: ``raise CardMuteError("…").with_code("reader.atr_timeout")``."""
        self.code = code
        return self


class DecodeError(PosemuError, ValueError):
    """Bytes from a peer could not be decoded. A :class:`ValueError` too, as pyiso8583's and
    ``json.JSONDecodeError`` are, so code that handles bad values handles bad bytes.

    >>> e = DecodeError("bad length", field="35", pos=12, raw=bytes.fromhex("0102"))
    >>> str(e)
    'bad length: field 35, position 12, raw 0102'
    >>> isinstance(e, ValueError) and isinstance(e, PosemuError)
    True
    """

    code = "decode.error"

    def __init__(
        self,
        msg: str,
        *,
        field: str = "",
        pos: int | None = None,
        raw: bytes = b"",
        partial: Mapping[str, Any] | None = None,
    ) -> None:
        self.msg = msg
        self.field = field
        self.pos = pos
        self.raw = bytes(raw)
        self.partial: dict[str, Any] = dict(partial or {})
        super().__init__(self._render())

    def _render(self) -> str:
        parts = [mask_text(self.msg)]
        where = []
        if self.field:
            where.append(f"field {self.field}")
        if self.pos is not None:
            where.append(f"position {self.pos}")
        if self.raw:
            shown = self.raw[:64]
            more = f"…(+{len(self.raw) - 64} bytes)" if len(self.raw) > 64 else ""
            where.append(f"raw {mask_hex(shown.hex().upper())}{more}")
        return parts[0] + (": " + ", ".join(where) if where else "")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_decode_error, (type(self), self.msg, self.field, self.pos, self.raw, self.partial))

    def at(self, prefix: str, offset: int = 0) -> DecodeError:
        """The same error seen from an enclosing structure: path ``prefix.field``, position shifted."""
        field = f"{prefix}.{self.field}" if self.field else prefix
        pos = None if self.pos is None else self.pos + offset
        err = type(self)(self.msg, field=field, pos=pos, raw=self.raw, partial=self.partial)
        return err


def _rebuild_decode_error(
    cls: type[DecodeError], msg: str, field: str, pos: int | None, raw: bytes, partial: dict[str, Any]
) -> DecodeError:
    return cls(msg, field=field, pos=pos, raw=raw, partial=partial)


class EncodeError(PosemuError):
    """A message, APDU or record could not be built from the values given (local misuse)."""

    code = "encode.error"

    def __init__(self, msg: str, *, field: str = "") -> None:
        self.msg = msg
        self.field = field
        super().__init__(mask_text(msg) + (f": field {field}" if field else ""))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_encode_error, (type(self), self.msg, self.field))


def _rebuild_encode_error(cls: type[EncodeError], msg: str, field: str) -> EncodeError:
    return cls(msg, field=field)


class ProtocolError(PosemuError):
    """A peer broke the protocol's rules (unexpected message, unmatched response, wrong state)."""

    code = "protocol.error"


class CryptoError(PosemuError):
    """A cryptographic check failed (MAC mismatch, key check value mismatch, bad key length)."""

    code = "crypto.error"


class UsageError(PosemuError):
    """The caller asked for something invalid: a bad option value, an unknown id, a malformed
    file they named. Nothing was attempted; fixing the request fixes it."""

    code = "usage.error"


class ConfigError(UsageError):
    """A configuration file, profile or URL is invalid. The message says which key and why."""

    code = "config.error"


class EnvironmentProblem(PosemuError):
    """The request is valid but the environment cannot serve it: a state folder that cannot be
    created or written, a corrupt or truncated database, an output path that cannot be written,
    a reader service that is down. The message names the path or service and the reason."""

    code = "environment.error"
