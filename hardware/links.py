"""Byte links (:class:`hardware.ports.ByteLink`): a pyserial port, and the master end of a pty.

* :class:`SerialLink` — any port pyserial opens with ``serial.serial_for_url``: a tty
  (``/dev/ttyUSB0``, a pty slave ``/dev/pts/7``) or a pyserial URL (``loop://``,
  ``socket://127.0.0.1:7000``). Opened with ``exclusive=True`` by default (an advisory
  ``flock``), so a second program opening the same port fails with :class:`PortBusyError`
  instead of stealing half the bytes. pyserial blocks, so every call runs in a worker thread
  announced to the clock (:func:`hardware.clock.run_external`).
* :class:`PtyPair` — a pseudo-terminal (``os.openpty``) whose slave path a serial program opens
  and whose master end is a non-blocking :class:`PtyMasterLink` read and written on the event
  loop (no threads). The device emulators sit behind it (``posemu device msr --pty``).

pyserial errors are translated here: port missing → :class:`NoReaderError`; held by another
program or permission denied → :class:`PortBusyError`; a failing port → :class:`LinkError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import tty
from typing import Any

from hardware.clock import Clock, run_external
from hardware.errors import LinkError, NoReaderError, PortBusyError
from protocol.errors import ConfigError

_BUSY = {errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK}
_DENIED = {errno.EACCES, errno.EPERM}
_MISSING = {errno.ENOENT, errno.ENODEV, errno.ENXIO}


def _serial_module() -> Any:
    try:
        import serial
    except ImportError as e:  # pragma: no cover - pyserial is a core dependency
        raise LinkError(f"pyserial is not installed ({e}); pip install pyserial") from None
    return serial


def translate_serial_error(e: BaseException, port: str, action: str) -> Exception:
    """The project error for a pyserial/OS error raised while ``action`` on ``port``."""
    code = getattr(e, "errno", None)
    if code in _MISSING:
        return NoReaderError(
            f"serial port {port} does not exist ({action}): is the reader plugged in and its driver "
            "loaded? `posemu readers` lists the serial ports"
        ).with_code("serial.not_found")
    if code in _BUSY:
        return PortBusyError(
            f"serial port {port} is held by another program ({action}); close it (a terminal program, "
            "ModemManager, another posemu) — `fuser -v " + port + "` shows who"
        )
    if code in _DENIED:
        return PortBusyError(
            f"permission denied on serial port {port} ({action}); add your user to the dialout group "
            "(`sudo usermod -aG dialout $USER`, then log in again)"
        ).with_code("serial.permission_denied")
    if isinstance(e, ValueError):
        return ConfigError(f"serial port {port}: invalid setting ({e})")
    return LinkError(f"serial port {port}: {action} failed ({type(e).__name__}: {e}); was the device unplugged?")


class SerialLink:
    """A pyserial port as a :class:`~hardware.ports.ByteLink` (opened on first use)."""

    def __init__(self, url: str, *, clock: Clock, baudrate: int = 9600, exclusive: bool = True) -> None:
        self._url = url
        self._clock = clock
        self._baudrate = baudrate
        self._exclusive = exclusive
        self._port: Any = None
        self._timeout: float | None = None

    @property
    def name(self) -> str:
        return self._url

    @property
    def is_open(self) -> bool:
        return self._port is not None

    async def open(self) -> None:
        if self._port is None:
            self._port = await run_external(self._clock, self._open_blocking)

    def _open_blocking(self) -> Any:
        serial = _serial_module()
        try:
            return serial.serial_for_url(
                self._url, baudrate=self._baudrate, bytesize=8, parity="N", stopbits=1, timeout=0.1,
                exclusive=self._exclusive,
            )
        except (serial.SerialException, OSError, ValueError) as e:
            raise translate_serial_error(e, self._url, "open") from None

    async def write(self, data: bytes) -> None:
        await self.open()
        await run_external(self._clock, self._write_blocking, bytes(data))

    def _write_blocking(self, data: bytes) -> None:
        port = self._port
        if port is None:
            raise LinkError(f"serial port {self._url} is closed")
        serial = _serial_module()
        try:
            port.write(data)
            port.flush()
        except (serial.SerialException, OSError) as e:
            raise translate_serial_error(e, self._url, "write") from None

    async def read(self, n: int, timeout: float) -> bytes:
        await self.open()
        return await run_external(self._clock, self._read_blocking, n, max(0.0, timeout))

    def _read_blocking(self, n: int, timeout: float) -> bytes:
        """Up to ``n`` bytes: wait up to ``timeout`` for the first, then take what is buffered."""
        port = self._port
        if port is None:
            raise LinkError(f"serial port {self._url} is closed")
        serial = _serial_module()
        try:
            if self._timeout != timeout:
                port.timeout = timeout
                self._timeout = timeout
            first: bytes = port.read(1)
            if not first or n <= 1:
                return first
            more = min(n - 1, port.in_waiting)
            return first + (port.read(more) if more else b"")
        except (serial.SerialException, OSError) as e:
            raise translate_serial_error(e, self._url, "read") from None

    async def close(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            with contextlib.suppress(Exception):
                await run_external(self._clock, port.close)


class PtyMasterLink:
    """The master end of a pty as a :class:`~hardware.ports.ByteLink`, on the event loop."""

    def __init__(self, fd: int, name: str) -> None:
        self._fd = fd
        self._name = name
        os.set_blocking(fd, False)

    @property
    def name(self) -> str:
        return self._name

    @property
    def fd(self) -> int:
        return self._fd

    async def _wait(self, writable: bool, timeout: float | None) -> bool:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        (loop.add_writer if writable else loop.add_reader)(self._fd, ready)
        try:
            if timeout is None:
                await fut
            else:
                async with asyncio.timeout(timeout):
                    await fut
            return True
        except TimeoutError:
            return False
        finally:
            (loop.remove_writer if writable else loop.remove_reader)(self._fd)

    async def read(self, n: int, timeout: float) -> bytes:
        if self._fd < 0:
            raise LinkError(f"{self._name}: the pty is closed")
        for _ in range(2):                   # try, then wait once for readability
            try:
                return os.read(self._fd, n)
            except BlockingIOError:
                pass
            except OSError as e:
                if e.errno == errno.EIO:     # no process has the slave open: nothing to read
                    return b""
                raise LinkError(f"{self._name}: read failed ({e})") from None
            if not await self._wait(False, timeout):
                return b""
        return b""

    async def write(self, data: bytes) -> None:
        view = memoryview(bytes(data))
        for _ in range(len(view) + 1):       # every pass writes ≥ 1 byte or waits once
            if not view:
                return
            if self._fd < 0:
                raise LinkError(f"{self._name}: the pty is closed")
            try:
                k = os.write(self._fd, view)
                view = view[k:]
                continue
            except BlockingIOError:
                pass
            except OSError as e:
                raise LinkError(f"{self._name}: write failed ({e})") from None
            if not await self._wait(True, 5.0):
                raise LinkError(f"{self._name}: the reader side does not take bytes (write timed out)")

    async def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


class PtyPair:
    """A pseudo-terminal: a serial program opens :attr:`slave_path`; we talk through :attr:`master`.

    The slave is put in raw mode (no echo, no line editing, no CR/LF translation) and kept open
    here, so the terminal settings hold and the master never sees EIO between two openers.
    """

    def __init__(self) -> None:
        master, slave = os.openpty()
        try:
            tty.setraw(slave)
            self.slave_path = os.ttyname(slave)
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        self._slave_fd = slave
        self.master = PtyMasterLink(master, f"pty master of {self.slave_path}")

    async def close(self) -> None:
        await self.master.close()
        fd, self._slave_fd = self._slave_fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
