"""Working keys: check values, parity, TMK wrapping, generation and the field 62 key block."""

from __future__ import annotations

import doctest
import pickle
import random
from collections.abc import Iterator

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from hypothesis import given
from hypothesis import strategies as st

import protocol.keys
from protocol.errors import CryptoError, DecodeError, EncodeError
from protocol.keys import (
    KeyScheme,
    WorkingKeys,
    build_field62,
    check_parity,
    generate_key,
    generate_working_keys,
    has_odd_parity,
    kcv,
    parse_field62,
    unwrap_key,
    with_odd_parity,
    wrap_key,
)

# Published pair: TMK 70F2A84CCBC2AE8625CBB0F2C22AB923, TAK 96D605EA176B7E9E (under the TMK) =
# C24A8FB57AA20123 (clear). CSDN post https://blog.csdn.net/zhu244912654/article/details/80005341
# ("MAC算法演示") and JokerZhu/PythonLearn myTest/8583/my8583/pyScript/Security.py.
TMK = bytes.fromhex("70F2A84CCBC2AE8625CBB0F2C22AB923")
TAK_ENC = bytes.fromhex("96D605EA176B7E9E")
TAK = bytes.fromhex("C24A8FB57AA20123")

# The classic test key and its check values (08D7B4FB629D0885 is E(K, 0) in countless HSM
# manuals and test suites; D5D44FF720683D0D is DES(0123456789ABCDEF, 0)).
K2 = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
K1 = bytes.fromhex("0123456789ABCDEF")

des_key = st.sampled_from([8, 16, 24]).flatmap(lambda n: st.binary(min_size=n, max_size=n))
schemes = st.sampled_from(KeyScheme)


def _keys_for(scheme: KeyScheme, rnd: random.Random) -> WorkingKeys:
    return generate_working_keys(scheme, token_bytes=rnd.randbytes)


def _leaks(text: str, *secrets: bytes) -> bool:
    low = text.lower()
    return any(s.hex() in low for s in secrets if s)


def test_doctests() -> None:
    result = doctest.testmod(protocol.keys)
    assert result.failed == 0
    assert result.attempted > 0


# --- check values ------------------------------------------------------------------------------


def test_kcv_known_values() -> None:
    assert kcv(K2).hex().upper() == "08D7B4FB"
    assert kcv(K2, 3).hex().upper() == "08D7B4"
    assert kcv(K2, 8).hex().upper() == "08D7B4FB629D0885"
    assert kcv(K1).hex().upper() == "D5D44FF7"
    assert kcv(K1 * 3) == kcv(K1)  # K1‖K1‖K1 is single DES
    assert kcv(K2 + K2[:8]) == kcv(K2)


def test_kcv_matches_independent_cipher() -> None:
    enc = Cipher(TripleDES(TMK + TMK[:8]), modes.ECB()).encryptor()
    assert kcv(TMK) == (enc.update(bytes(8)) + enc.finalize())[:4]


@pytest.mark.parametrize("length", [0, 2, 9])
def test_kcv_length_bounds(length: int) -> None:
    with pytest.raises(CryptoError):
        kcv(K2, length)


@pytest.mark.parametrize("length", [0, 7, 9, 15, 17, 23, 25, 32])
def test_key_length_validation(length: int) -> None:
    for call in (
        lambda: kcv(bytes(length)),
        lambda: wrap_key(bytes(length), K2),
        lambda: wrap_key(K2, bytes(length)),
        lambda: unwrap_key(bytes(length), TAK_ENC),
        lambda: unwrap_key(K2, bytes(length)),
        lambda: check_parity(bytes(length)),
    ):
        with pytest.raises(CryptoError, match="8, 16, 24 bytes"):
            call()


def test_type_errors() -> None:
    with pytest.raises(TypeError):
        kcv(K2.hex())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        wrap_key(TMK, "C24A8FB57AA20123")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        unwrap_key(None, TAK_ENC)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        WorkingKeys(pik="x" * 16, mak=K1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        WorkingKeys(pik=K2, mak=bytearray(K1))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        parse_field62(TMK, "00" * 40)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        build_field62(TMK, (K2, K1), KeyScheme.DOUBLE)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        generate_key("16")  # type: ignore[arg-type]


# --- parity --------------------------------------------------------------------------------------


def test_parity() -> None:
    assert has_odd_parity(K2)  # 01 23 45 … all have odd parity
    assert has_odd_parity(TAK)  # the published keys are parity-adjusted
    even = bytes.fromhex("1122334455667788")  # 11 has two 1 bits
    assert not has_odd_parity(even)
    fixed = with_odd_parity(even)
    assert fixed.hex().upper() == "1023324554677689"
    assert has_odd_parity(fixed)
    assert kcv(fixed) == kcv(even)  # DES ignores the parity bits
    check_parity(K2)
    with pytest.raises(CryptoError, match="parity") as info:
        check_parity(even, "MAK")
    assert "MAK" in str(info.value)
    assert not _leaks(str(info.value), even)


@given(st.binary(max_size=24))
def test_with_odd_parity_property(raw: bytes) -> None:
    fixed = with_odd_parity(raw)
    assert has_odd_parity(fixed)
    assert with_odd_parity(fixed) == fixed
    assert bytes(b & 0xFE for b in fixed) == bytes(b & 0xFE for b in raw)


# --- wrapping ------------------------------------------------------------------------------------


def test_unwrap_published_vector() -> None:
    assert unwrap_key(TMK, TAK_ENC) == TAK
    assert wrap_key(TMK, TAK) == TAK_ENC
    assert unwrap_key(TMK, TAK_ENC, check_value=kcv(TAK)) == TAK
    assert unwrap_key(TMK, TAK_ENC, check_value=kcv(TAK, 3)) == TAK


def test_unwrap_check_value_mismatch_names_key_and_leaks_nothing() -> None:
    with pytest.raises(CryptoError, match="check value mismatch for MAK") as info:
        unwrap_key(TMK, TAK_ENC, check_value=bytes(4), name="MAK")
    assert not _leaks(str(info.value), TMK, TAK, TAK_ENC, kcv(TAK))
    with pytest.raises(CryptoError):
        unwrap_key(TMK, TAK_ENC, check_value=b"\x00\x01")


@given(tmk=des_key, key=des_key)
def test_wrap_unwrap_round_trip(tmk: bytes, key: bytes) -> None:
    blob = wrap_key(tmk, key)
    assert len(blob) == len(key)
    assert unwrap_key(tmk, blob, check_value=kcv(key)) == key


# --- generation ----------------------------------------------------------------------------------


def test_generate_key_is_reproducible_with_seeded_source_and_has_parity() -> None:
    a = generate_key(16, token_bytes=random.Random(7).randbytes)
    b = generate_key(16, token_bytes=random.Random(7).randbytes)
    assert a == b
    assert len(a) == 16
    assert has_odd_parity(a)
    assert len(generate_key(8)) == 8
    assert len(generate_key(24)) == 24
    assert generate_key() != generate_key()


def _source(*draws: bytes) -> Iterator[bytes]:
    yield from draws


def test_generate_key_redraws_weak_and_degenerate_keys() -> None:
    good = bytes.fromhex("0123456789ABCDEF")
    draws = _source(
        bytes.fromhex("0000000000000000"),  # → 0101…01, weak
        bytes.fromhex("1FE01FE00EF10EF1"),  # semi-weak
        good,
    )
    assert generate_key(8, token_bytes=lambda n: next(draws)) == good
    draws = _source(good + good, good + bytes.fromhex("FEDCBA9876543210"))
    assert generate_key(16, token_bytes=lambda n: next(draws)) == K2


def test_generate_key_gives_up_on_a_broken_source() -> None:
    with pytest.raises(CryptoError, match="random source"):
        generate_key(16, token_bytes=lambda n: bytes(n))
    with pytest.raises(CryptoError):
        generate_key(16, token_bytes=lambda n: bytes(n - 1))
    with pytest.raises(CryptoError):
        generate_key(12)


@pytest.mark.parametrize("scheme", list(KeyScheme))
def test_generate_working_keys_shapes(scheme: KeyScheme) -> None:
    keys = generate_working_keys(scheme, token_bytes=random.Random(1).randbytes)
    assert len(keys.pik) == (8 if scheme is KeyScheme.SINGLE else 16)
    assert len(keys.mak) == 8
    assert (keys.tdk is not None) == (scheme is KeyScheme.DOUBLE_TDK)
    for key in (keys.pik, keys.mak, keys.tdk):
        assert key is None or has_odd_parity(key)


# --- WorkingKeys -------------------------------------------------------------------------------


def test_working_keys_repr_shows_check_values_only() -> None:
    keys = WorkingKeys(pik=K2, mak=TAK, tdk=K2[::-1])
    text = repr(keys) + str(keys) + f"{keys}" + repr([keys])
    assert "08D7B4FB" in text
    assert kcv(TAK).hex().upper() in text
    assert not _leaks(text, K2, TAK, K2[::-1], K2[:8], K2[8:], TAK[:4])
    assert keys == WorkingKeys(pik=K2, mak=TAK, tdk=K2[::-1])
    assert pickle.loads(pickle.dumps(keys)) == keys
    with pytest.raises(AttributeError):
        keys.pik = K1  # type: ignore[misc]


def test_working_keys_validate_lengths() -> None:
    with pytest.raises(CryptoError, match="PIK"):
        WorkingKeys(pik=bytes(15), mak=K1)
    with pytest.raises(CryptoError, match="MAK"):
        WorkingKeys(pik=K2, mak=b"")
    with pytest.raises(CryptoError, match="TDK"):
        WorkingKeys(pik=K2, mak=K1, tdk=bytes(4))


# --- field 62 ----------------------------------------------------------------------------------


def test_field62_double_layout_with_published_keys() -> None:
    # MAK = the published TAK, so its wrapped form and check value are known independently
    keys = WorkingKeys(pik=K2, mak=TAK)
    block = build_field62(TMK, keys, KeyScheme.DOUBLE)
    assert len(block) == 40
    assert block[:16] == wrap_key(TMK, K2)
    assert block[16:20].hex().upper() == "08D7B4FB"
    assert block[20:28] == TAK_ENC
    assert block[28:36] == bytes(8)
    assert block[36:40] == kcv(TAK)
    assert parse_field62(TMK, block, KeyScheme.DOUBLE) == keys
    assert parse_field62(TMK, block) == keys  # scheme inferred from the length


def test_field62_single_layout() -> None:
    tmk = bytes.fromhex("0123456789ABCDEF")
    keys = WorkingKeys(pik=TAK, mak=K1)
    block = build_field62(tmk, keys, KeyScheme.SINGLE)
    assert len(block) == 24
    assert block[:8] == wrap_key(tmk, TAK)
    assert block[8:12] == kcv(TAK)
    assert block[12:20] == wrap_key(tmk, K1)
    assert block[20:24].hex().upper() == "D5D44FF7"
    assert parse_field62(tmk, block, KeyScheme.SINGLE) == keys


def test_field62_with_tdk_layout() -> None:
    tdk = bytes.fromhex("FEDCBA98765432100123456789ABCDEF")
    keys = WorkingKeys(pik=K2, mak=TAK, tdk=tdk)
    block = build_field62(TMK, keys, KeyScheme.DOUBLE_TDK)
    assert len(block) == 60
    assert block[:40] == build_field62(TMK, WorkingKeys(pik=K2, mak=TAK), KeyScheme.DOUBLE)
    assert block[40:56] == wrap_key(TMK, tdk)
    assert block[56:60] == kcv(tdk)
    assert parse_field62(TMK, block, KeyScheme.DOUBLE_TDK) == keys


@pytest.mark.parametrize(
    ("keys", "scheme"),
    [
        (WorkingKeys(pik=K2, mak=K1), KeyScheme.SINGLE),  # PIK too long for 001
        (WorkingKeys(pik=K1, mak=K1), KeyScheme.DOUBLE),  # PIK too short for 003
        (WorkingKeys(pik=K2, mak=K2), KeyScheme.DOUBLE),  # MAK must be single length
        (WorkingKeys(pik=K2, mak=K1), KeyScheme.DOUBLE_TDK),  # TDK missing
        (WorkingKeys(pik=K2, mak=K1, tdk=K2), KeyScheme.DOUBLE),  # TDK not allowed
        (WorkingKeys(pik=K2, mak=K1, tdk=K1), KeyScheme.DOUBLE_TDK),  # TDK must be 16 bytes
    ],
)
def test_build_field62_rejects_keys_that_do_not_fit(keys: WorkingKeys, scheme: KeyScheme) -> None:
    with pytest.raises(EncodeError) as info:
        build_field62(TMK, keys, scheme)
    assert info.value.field == "62"


@pytest.mark.parametrize(
    ("offset", "name"),
    [(16, "PIK"), (37, "MAK"), (58, "TDK")],
)
def test_parse_field62_names_the_key_whose_check_value_fails(offset: int, name: str) -> None:
    keys = WorkingKeys(pik=K2, mak=TAK, tdk=K2[::-1])
    block = bytearray(build_field62(TMK, keys, KeyScheme.DOUBLE_TDK))
    block[offset] ^= 0x01
    with pytest.raises(CryptoError, match=f"check value mismatch for {name}") as info:
        parse_field62(TMK, bytes(block))
    assert not _leaks(str(info.value), TMK, K2, TAK, K2[::-1], TAK_ENC)


def test_parse_field62_wrong_tmk_fails_the_pik_check() -> None:
    block = build_field62(TMK, WorkingKeys(pik=K2, mak=TAK), KeyScheme.DOUBLE)
    with pytest.raises(CryptoError, match="PIK"):
        parse_field62(K2, block)


def test_parse_field62_non_zero_mak_padding() -> None:
    block = bytearray(build_field62(TMK, WorkingKeys(pik=K2, mak=TAK), KeyScheme.DOUBLE))
    block[30] = 0x55
    with pytest.raises(DecodeError, match="padding") as info:
        parse_field62(TMK, bytes(block))
    assert info.value.field == "62"
    assert info.value.pos == 28
    assert info.value.raw == b""


@pytest.mark.parametrize(("length", "scheme"), [(0, None), (39, None), (41, None), (40, KeyScheme.SINGLE)])
def test_parse_field62_wrong_length(length: int, scheme: KeyScheme | None) -> None:
    data = bytes(range(length))
    with pytest.raises(DecodeError) as info:
        parse_field62(TMK, data, scheme)
    assert info.value.field == "62"
    assert info.value.raw == b""
    assert not _leaks(str(info.value), data)


def test_scheme_lengths() -> None:
    assert [s.value for s in KeyScheme] == ["001", "003", "004"]
    assert [s.field62_length for s in KeyScheme] == [24, 40, 60]
    assert KeyScheme.for_field62_length(40) is KeyScheme.DOUBLE
    assert KeyScheme.for_field62_length(41) is None
    assert KeyScheme("003") is KeyScheme.DOUBLE


@given(scheme=schemes, seed=st.integers(0, 2**32), tmk=des_key)
def test_field62_round_trip(scheme: KeyScheme, seed: int, tmk: bytes) -> None:
    keys = _keys_for(scheme, random.Random(seed))
    block = build_field62(tmk, keys, scheme)
    assert len(block) == scheme.field62_length
    assert parse_field62(tmk, block, scheme) == keys
    assert parse_field62(tmk, block) == keys


@given(
    data=st.one_of(
        st.binary(max_size=80),
        st.sampled_from([24, 40, 60]).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
    ),
    scheme=st.one_of(st.none(), schemes),
    tmk=des_key,
)
def test_parse_field62_arbitrary_bytes_raise_only_project_errors(
    data: bytes, scheme: KeyScheme | None, tmk: bytes
) -> None:
    error: DecodeError | CryptoError | None = None
    try:
        keys = parse_field62(tmk, data, scheme)
    except (DecodeError, CryptoError) as err:
        error = err
    if error is not None:
        assert not _leaks(str(error), data[:8] if len(data) >= 4 else b"", tmk)
        return
    used = scheme or KeyScheme.for_field62_length(len(data))
    assert used is not None
    assert build_field62(tmk, keys, used) == data
