"""ISO 9564-1 PIN blocks: known vectors, validation, no leaks, round trips."""

from __future__ import annotations

import doctest
import pickle
import random

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from hypothesis import given
from hypothesis import strategies as st

import protocol._des
import protocol.pinblock
from protocol.errors import CryptoError, DecodeError, EncodeError
from protocol.pinblock import (
    Pin,
    PinBlockFormat,
    decode_pinblock,
    decrypt_pinblock,
    encode_pinblock,
    encrypt_pinblock,
    pan_field,
    pin_field,
)

pins = st.text(alphabet="0123456789", min_size=4, max_size=12)
pans = st.text(alphabet="0123456789", min_size=13, max_size=19)
des_keys = st.sampled_from([8, 16, 24]).flatmap(lambda n: st.binary(min_size=n, max_size=n))
formats = st.sampled_from(PinBlockFormat)


def _independent_ecb_encrypt(key: bytes, block: bytes) -> bytes:
    """3DES-ECB straight from ``cryptography``, keyed K1‖K2‖K3 by hand (not via protocol._des)."""
    k24 = {8: key * 3, 16: key + key[:8], 24: key}[len(key)]
    enc = Cipher(TripleDES(k24), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


def test_doctests() -> None:
    for module in (protocol.pinblock, protocol._des):
        result = doctest.testmod(module)
        assert result.failed == 0
        assert result.attempted > 0


# --- known vectors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pin", "pan", "block"),
    [
        # protocol-facts §7 (knovichikhin/psec pinblock.py docstring)
        ("1234", "5544332211009966", "041277CDDEEFF669"),
        # knovichikhin/psec tests/test_pinblock.py
        ("1234", "5555555551234567", "041261AAAAEDCBA9"),
        ("123456789", "5555555551234567", "091261032D8DCBA9"),
        ("1234567890", "5555555551234567", "0A1261032D82CBA9"),
        ("123456789012", "5555555551234567", "0C1261032D8226A9"),
    ],
)
def test_format0_known_vectors(pin: str, pan: str, block: str) -> None:
    assert encode_pinblock(pin, pan).hex().upper() == block
    assert encode_pinblock(Pin(pin), pan).hex().upper() == block
    assert decode_pinblock(bytes.fromhex(block), pan) == pin


def test_fields() -> None:
    assert pin_field("1234").hex().upper() == "041234FFFFFFFFFF"
    assert pin_field("123456789012").hex().upper() == "0C123456789012FF"
    assert pan_field("5544332211009966").hex().upper() == "0000433221100996"
    # 19-digit PAN: still the 12 digits left of the check digit
    assert pan_field("6212345678901234567").hex().upper() == "0000567890123456"
    # 12-digit PAN: only 11 digits without the check digit, right-justified (ISO 9564-1)
    assert pan_field("123456789012").hex().upper() == "0000012345678901"


def test_format3_fill_is_random_a_to_f_and_decodes() -> None:
    rng = random.Random(3)
    block = encode_pinblock("1234", "5544332211009966", PinBlockFormat.ISO_3, token_bytes=rng.randbytes)
    clear = protocol._des.xor(block, pan_field("5544332211009966")).hex().upper()
    assert clear[:6] == "341234"
    assert set(clear[6:]) <= set("ABCDEF")
    assert decode_pinblock(block, "5544332211009966", PinBlockFormat.ISO_3) == "1234"
    with pytest.raises(DecodeError, match="format 0"):
        decode_pinblock(block, "5544332211009966")


def test_format3_fill_rejects_biased_bytes() -> None:
    # 252..255 would bias byte % 6; they are skipped, the next bytes are used
    draws = iter([bytes([255, 254, 253, 252]) + bytes(range(20)), bytes(range(20))])
    field = pin_field("1234", PinBlockFormat.ISO_3, token_bytes=lambda n: next(draws))
    assert field.hex().upper() == "341234ABCDEFABCD"


def test_encrypted_pinblock_matches_independent_3des() -> None:
    pik = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    clear = bytes.fromhex("041277CDDEEFF669")
    enc = encrypt_pinblock("1234", "5544332211009966", pik)
    assert enc == _independent_ecb_encrypt(pik, clear)
    assert decrypt_pinblock(enc, "5544332211009966", pik) == "1234"


def test_single_length_pik_is_des() -> None:
    # An 8-byte key is single DES: key 0123456789ABCDEF over the zero block gives the classic
    # D5D44FF720683D0D (its KCV D5D44F is in every HSM manual).
    pik = bytes.fromhex("0123456789ABCDEF")
    assert protocol._des.ecb_encrypt(pik, bytes(8)).hex().upper() == "D5D44FF720683D0D"
    enc = encrypt_pinblock("4321", "5544332211009966", pik)
    assert enc == _independent_ecb_encrypt(pik, encode_pinblock("4321", "5544332211009966"))
    assert decrypt_pinblock(enc, "5544332211009966", pik) == "4321"


# --- validation and errors -------------------------------------------------------------------


@pytest.mark.parametrize("pin", ["123", "1234567890123", "123A", "", "12 34", "١٢٣٤", "１２３４"])
def test_bad_pin_is_encode_error_without_the_pin(pin: str) -> None:
    with pytest.raises(EncodeError) as info:
        encode_pinblock(pin, "5544332211009966")
    assert info.value.field == "52"
    if pin.strip():
        assert pin not in str(info.value)
    with pytest.raises(EncodeError):
        Pin(pin)


@pytest.mark.parametrize("pan", ["12345678901", "55443322110099661234", "554433221100996A", ""])
def test_bad_pan_is_encode_error_without_the_pan(pan: str) -> None:
    with pytest.raises(EncodeError) as info:
        encode_pinblock("1234", pan)
    assert info.value.field == "2"
    if pan:
        assert pan not in str(info.value)
    with pytest.raises(EncodeError):
        decode_pinblock(bytes(8), pan)


def test_type_errors() -> None:
    with pytest.raises(TypeError):
        encode_pinblock(1234, "5544332211009966")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encode_pinblock("1234", 5544332211009966)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        decode_pinblock("041277CDDEEFF669", "5544332211009966")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encrypt_pinblock("1234", "5544332211009966", "0123456789ABCDEF")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encode_pinblock("1234", "5544332211009966", 0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Pin(1234)  # type: ignore[arg-type]


@pytest.mark.parametrize("length", [0, 7, 9, 15])
def test_bad_key_length_is_crypto_error(length: int) -> None:
    with pytest.raises(CryptoError):
        encrypt_pinblock("1234", "5544332211009966", bytes(length))
    with pytest.raises(CryptoError):
        decrypt_pinblock(bytes(8), "5544332211009966", bytes(length))


@pytest.mark.parametrize(
    ("block", "pan", "message"),
    [
        # error cases from knovichikhin/psec tests/test_pinblock.py
        ("241261AAAAEDCBA9", "5555555551234567", "control field"),
        ("041261AAAAEDCB", "5555555551234567", "8 bytes"),
        ("0F1261AAAAEDCBA9", "5555555551234567", "PIN length"),
        ("021261AAAAEDCBA9", "5555555551234567", "PIN length"),
        ("041261AAAAEDCBAA", "5555555551234567", "fill"),
        ("051261AAAAEDCBA9", "5555555551234567", "non-decimal"),
    ],
)
def test_decode_errors_name_field_52_and_leak_nothing(block: str, pan: str, message: str) -> None:
    with pytest.raises(DecodeError, match=message) as info:
        decode_pinblock(bytes.fromhex(block), pan)
    err = info.value
    assert err.field == "52"
    assert err.raw == b""
    text = str(err) + repr(err)
    for secret in (pan, pan[3:15], block, block.lower(), "1234"):
        assert secret not in text
    # picklable, like every posemu error
    clone = pickle.loads(pickle.dumps(err))
    assert isinstance(clone, DecodeError)
    assert str(clone) == str(err)


def test_decrypt_wrong_length_block() -> None:
    with pytest.raises(DecodeError) as info:
        decrypt_pinblock(bytes(7), "5544332211009966", bytes(16))
    assert info.value.field == "52"


def test_pin_value_type_hides_digits() -> None:
    pin = Pin("987654")
    assert "987654" not in repr(pin)
    assert "987654" not in str(pin)
    assert "987654" not in f"{pin}"
    assert "987654" not in repr([pin])
    assert pin == Pin("987654")
    assert pickle.loads(pickle.dumps(pin)) == pin
    with pytest.raises(AttributeError):
        pin.digits = "1111"  # type: ignore[misc]


# --- properties --------------------------------------------------------------------------------


@given(pin=pins, pan=pans, fmt=formats, seed=st.integers(0, 2**32))
def test_encode_decode_round_trip(pin: str, pan: str, fmt: PinBlockFormat, seed: int) -> None:
    block = encode_pinblock(pin, pan, fmt, token_bytes=random.Random(seed).randbytes)
    assert len(block) == 8
    assert decode_pinblock(block, pan, fmt) == pin


@given(pin=pins, pan=pans, pik=des_keys, fmt=formats)
def test_encrypt_decrypt_round_trip(pin: str, pan: str, pik: bytes, fmt: PinBlockFormat) -> None:
    enc = encrypt_pinblock(pin, pan, pik, fmt)
    assert len(enc) == 8
    assert decrypt_pinblock(enc, pan, pik, fmt) == pin


@given(pin=pins, pan=pans, pik=des_keys)
def test_encrypt_matches_independent_cipher(pin: str, pan: str, pik: bytes) -> None:
    assert encrypt_pinblock(pin, pan, pik) == _independent_ecb_encrypt(pik, encode_pinblock(pin, pan))


@given(block=st.binary(min_size=8, max_size=8), pan=pans, fmt=formats)
def test_arbitrary_blocks_decode_or_raise_decode_error(block: bytes, pan: str, fmt: PinBlockFormat) -> None:
    error: DecodeError | None = None
    try:
        pin = decode_pinblock(block, pan, fmt)
    except DecodeError as err:
        error = err
    if error is not None:
        assert error.field == "52"
        assert block.hex() not in str(error).lower()
        return
    assert pin.isdigit()
    assert 4 <= len(pin) <= 12
    if fmt is PinBlockFormat.ISO_0:
        assert encode_pinblock(pin, pan) == block


@given(block=st.binary(max_size=20), pan=pans, pik=des_keys)
def test_arbitrary_encrypted_blocks_raise_only_decode_error(block: bytes, pan: str, pik: bytes) -> None:
    try:
        pin = decrypt_pinblock(block, pan, pik)
    except DecodeError:
        return
    assert pin.isdigit()
    assert 4 <= len(pin) <= 12


# --- format 1 and format detection (host dialects choose 0, 1 or 3) ----------------------------------


def test_format_1_is_the_pin_field_alone() -> None:
    """ISO 9564-1 format 1: ``1 N PIN`` then random transaction-field nibbles; the PAN is not XORed in."""
    block = encode_pinblock("1234", "5544332211009966", PinBlockFormat.ISO_1, token_bytes=lambda n: b"\x9a" * n)
    assert block.hex().upper() == "1412349A9A9A9A9A"
    assert decode_pinblock(block, "5544332211009966", PinBlockFormat.ISO_1) == "1234"
    # any other PAN decodes the same PIN: format 1 does not bind the PIN to the card
    assert decode_pinblock(block, "9900090000000017", PinBlockFormat.ISO_1) == "1234"


@given(pin=pins, pan=pans, pik=des_keys, fmt=formats)
def test_any_format_is_detected_and_decrypted(pin: str, pan: str, pik: bytes, fmt: PinBlockFormat) -> None:
    from protocol.pinblock import decrypt_pinblock_any, detect_format

    assert detect_format(encode_pinblock(pin, pan, fmt), pan) is fmt
    assert decrypt_pinblock_any(encrypt_pinblock(pin, pan, pik, fmt), pan, pik) == pin


@given(block=st.binary(min_size=8, max_size=8), pan=pans)
def test_detecting_arbitrary_blocks_raises_only_decode_error(block: bytes, pan: str) -> None:
    from protocol.pinblock import detect_format

    try:
        fmt = detect_format(block, pan)
    except DecodeError as e:
        assert e.field == "52" and block.hex() not in str(e).lower()
        return
    assert fmt in PinBlockFormat
