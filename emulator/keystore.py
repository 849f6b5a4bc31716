"""Secrets at rest: a local key-encryption key, private files and folders.

Keys and card data that posemu keeps on disk — the host's terminal master and working keys, the
journal's sealed reversal data, a terminal master key saved from the UI — are encrypted under a
**local key**: 32 random bytes in a file readable by its owner only (mode 0600), created on first
use beside the data it protects. Copying a database without its key file yields nothing usable.
Sealing is AES-256-GCM (``cryptography``) with a per-purpose subkey (HKDF-SHA256) and the purpose
as associated data, so a blob sealed for one purpose does not open for another.

State folders are created 0700 and state files 0600 (:func:`private_dir`, :func:`private_file`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import stat
from pathlib import Path

import platformdirs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from protocol.errors import ConfigError, CryptoError, EnvironmentProblem

KEY_SIZE = 32
_NONCE = 12
SEALED_PREFIX = "v1:"
"""Text form of a sealed secret (in TOML): ``v1:`` + base64(nonce ‖ ciphertext ‖ tag)."""


def user_state_dir() -> Path:
    """The per-user state folder (journal, host database, the user's local key)."""
    return Path(platformdirs.user_data_dir("posemu", appauthor=False))


def user_key() -> LocalKey:
    """The user's local key (``local.key`` in the state folder): seals keys kept in config files."""
    return LocalKey.at(user_state_dir() / "local.key")


def may_tighten(path: Path) -> bool:
    """May posemu make this existing folder private (0700)? Only a folder of the user's own that is
    not shared: never one with the sticky bit or writable by all (``/tmp``, ``/var/tmp``), never the
    home folder — tightening those would break other programs and users."""
    try:
        st = path.stat()
        home = Path.home().resolve()
    except (OSError, RuntimeError):
        return False
    shared = bool(st.st_mode & (stat.S_ISVTX | stat.S_IWOTH))
    return st.st_uid == os.getuid() and not shared and path.resolve() != home


def private_dir(path: Path) -> Path:
    """The state folder ``path``: created 0700 (with its parents) if missing; an existing one is made
    0700 when :func:`may_tighten` allows (a shared folder such as ``/tmp`` is left as it is — the
    files posemu writes are 0600 anyway)."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        if path.stat().st_mode & 0o077 and may_tighten(path):
            path.chmod(0o700)
    except OSError as e:
        raise EnvironmentProblem(f"cannot use state folder {path}: {e.strerror or e}") from None
    return path


def file_parent(path: Path) -> Path:
    """The folder a private file goes into: created 0700 if missing, an existing one left as it is
    (a journal or key given as ``/tmp/x`` must not change ``/tmp``)."""
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        raise EnvironmentProblem(f"cannot create {parent}: {e.strerror or e}") from None
    return parent


def private_file(path: Path) -> Path:
    """Make sure ``path`` exists and is readable and writable by its owner only (0600).

    Created empty when missing (SQLite then gives its -wal/-shm files the same mode)."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        os.close(fd)
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
    except OSError as e:
        raise EnvironmentProblem(f"cannot use {path}: {e.strerror or e}") from None
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write a file that only its owner can read (0600), atomically (temp file + rename).

    A path that exists and is no regular file — ``/dev/null``, a FIFO, a terminal — is written into
    as it is, never replaced by a file (a rename over ``--trace /dev/null`` would put a regular file
    in place of the device for every program on the machine)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        try:
            fd = os.open(path, os.O_WRONLY)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        except OSError as e:
            raise EnvironmentProblem(f"cannot write {path}: {e.strerror or e}") from None
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise EnvironmentProblem(f"cannot write {path}: {e.strerror or e}") from None


class LocalKey:
    """A local key-encryption key. ``repr`` never shows it."""

    __slots__ = ("_key", "path")

    def __init__(self, key: bytes, path: Path | None = None) -> None:
        if len(key) != KEY_SIZE:
            raise CryptoError(f"a local key is {KEY_SIZE} bytes")
        self._key = key
        self.path = path

    def __repr__(self) -> str:
        return f"LocalKey({self.path or 'in memory'})"

    @classmethod
    def ephemeral(cls) -> LocalKey:
        """A key that lives in memory only (in-memory databases, scratch runs)."""
        return cls(os.urandom(KEY_SIZE))

    @classmethod
    def at(cls, path: Path, *, create: bool = True) -> LocalKey:
        """The key in ``path``; a new random one is written (0600) when the file does not exist.

        A key file that others can read is refused: the key would protect nothing."""
        try:
            st = path.stat()
        except FileNotFoundError:
            if not create:
                raise ConfigError(f"local key {path} does not exist") from None
            file_parent(path)
            key = os.urandom(KEY_SIZE)
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            except FileExistsError:          # another process made it first: use theirs
                return cls.at(path, create=False)
            except OSError as e:
                raise EnvironmentProblem(f"cannot create local key {path}: {e.strerror or e}") from None
            with os.fdopen(fd, "wb") as f:
                f.write(key)
                f.flush()
                os.fsync(f.fileno())
            return cls(key, path)
        except OSError as e:
            raise EnvironmentProblem(f"cannot read local key {path}: {e.strerror or e}") from None
        if stat.S_IMODE(st.st_mode) & 0o077:
            raise EnvironmentProblem(f"local key {path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}); "
                              f"run: chmod 600 {path}")
        try:
            key = path.read_bytes()
        except OSError as e:
            raise EnvironmentProblem(f"cannot read local key {path}: {e.strerror or e}") from None
        if len(key) != KEY_SIZE:
            raise EnvironmentProblem(f"local key {path} is damaged ({len(key)} bytes, expected {KEY_SIZE})")
        return cls(key, path)

    def subkey(self, purpose: str) -> bytes:
        """A 32-byte key for one purpose (HKDF-SHA256, info = purpose)."""
        return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=None,
                    info=b"posemu " + purpose.encode()).derive(self._key)

    def seal(self, data: bytes, purpose: str) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + AESGCM(self.subkey(purpose)).encrypt(nonce, data, purpose.encode())

    def open(self, blob: bytes, purpose: str) -> bytes:
        if not isinstance(blob, bytes) or len(blob) < _NONCE + 16:
            raise CryptoError(f"sealed {purpose} is truncated")
        try:
            return AESGCM(self.subkey(purpose)).decrypt(blob[:_NONCE], blob[_NONCE:], purpose.encode())
        except InvalidTag:
            raise CryptoError(f"sealed {purpose} does not open under this local key "
                              f"({self.path or 'in memory'}): wrong key file, or the data was altered") from None

    def seal_text(self, data: bytes, purpose: str) -> str:
        return SEALED_PREFIX + base64.b64encode(self.seal(data, purpose)).decode("ascii")

    def open_text(self, text: str, purpose: str) -> bytes:
        if not text.startswith(SEALED_PREFIX):
            raise CryptoError(f"sealed {purpose} must start with {SEALED_PREFIX!r}")
        try:
            blob = base64.b64decode(text[len(SEALED_PREFIX):], validate=True)
        except ValueError:
            raise CryptoError(f"sealed {purpose} is not base64") from None
        return self.open(blob, purpose)

    def fingerprint(self, data: bytes, purpose: str) -> str:
        """A keyed hash (HMAC-SHA256) of ``data``: equal inputs match, the input cannot be guessed
        from it without the key (a PAN has few unknown digits once its mask is known)."""
        return hmac.new(self.subkey(purpose), data, hashlib.sha256).hexdigest()[:32]
