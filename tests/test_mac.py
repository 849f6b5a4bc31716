"""Field-64 MACs: ANSI X9.19 retail MAC and the CUP POS ECB MAC."""

from __future__ import annotations

import doctest

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from hypothesis import given
from hypothesis import strategies as st

import protocol.mac
from protocol.errors import CryptoError
from protocol.mac import MAC_SIZE, MacAlgorithm, compute_mac, cup_ecb_mac, retail_mac, verify_mac

# knovichikhin/psec tests/test_mac.py::test_generate_retail_mac, padding 1:
# key1 = b"AAAAAAAAAAAAAAAA" and key2 = b"BBBBBBBBBBBBBBBB" are psec's 2-key-3DES spellings of the
# single DES keys K1 = b"AAAAAAAA" and K2 = b"BBBBBBBB"; data b"hello world" -> 3DDE5C5511661CBF.
PSEC_KEY = b"AAAAAAAA" + b"BBBBBBBB"
PSEC_DATA = b"hello world"
PSEC_MAC = "3DDE5C5511661CBF"

# A CUP POS 0200 purchase request, MTI through field 63 (the MAB), TAK C24A8FB57AA20123 (clear;
# 96D605EA176B7E9E under TMK 70F2A84CCBC2AE8625CBB0F2C22AB923). Published with its MAC
# 8A9E91B8 (final block 8A9E91B88D839AC5) in JokerZhu/PythonLearn
# myTest/8583/my8583/pyScript/Security.py, and with the same data, keys and XOR steps in the
# CSDN post https://blog.csdn.net/zhu244912654/article/details/80005341 ("MAC算法演示").
CUP_MAB = bytes.fromhex(
    "0200302004C020C0981100000000000000005100183402100006324392260009942820D1312101"
    "120084393136363838303134303030303030303030303030303031313536ACF46E73838A82F926"
    "00000000000000000822000001"
)
CUP_TAK = bytes.fromhex("C24A8FB57AA20123")
CUP_MAC = b"8A9E91B8"

data_st = st.binary(max_size=300)
x919_keys = st.sampled_from([8, 16]).flatmap(lambda n: st.binary(min_size=n, max_size=n))
cup_keys = st.sampled_from([8, 16, 24]).flatmap(lambda n: st.binary(min_size=n, max_size=n))


def _des_ecb(key: bytes, block: bytes, *, decrypt: bool = False) -> bytes:
    k24 = {8: key * 3, 16: key + key[:8], 24: key}[len(key)]
    cipher = Cipher(TripleDES(k24), modes.ECB())
    ctx = cipher.decryptor() if decrypt else cipher.encryptor()
    return ctx.update(block) + ctx.finalize()


def _independent_retail_mac(key: bytes, data: bytes) -> bytes:
    """ISO/IEC 9797-1 alg. 3 as the textbook draws it, one DES block at a time: H_i =
    E_K1(H_i-1 XOR D_i) over every block, then the output transformation E_K1(D_K2(H_q))."""
    padded = data + bytes(-len(data) % 8) if data else bytes(8)
    k1, k2 = key[:8], key[-8:]
    h = bytes(8)
    for i in range(0, len(padded), 8):
        h = _des_ecb(k1, bytes(a ^ b for a, b in zip(h, padded[i : i + 8], strict=True)))
    return _des_ecb(k1, _des_ecb(k2, h, decrypt=True))


def _independent_cup_mac(key: bytes, data: bytes) -> bytes:
    padded = data + bytes(-len(data) % 8)
    x = bytearray(8)
    for i in range(0, len(padded), 8):
        for j in range(8):
            x[j] ^= padded[i + j]
    hx = bytes(x).hex().upper().encode()
    step = _des_ecb(key, hx[:8])
    step = _des_ecb(key, bytes(a ^ b for a, b in zip(step, hx[8:], strict=True)))
    return step.hex().upper().encode()[:8]


def test_doctests() -> None:
    result = doctest.testmod(protocol.mac)
    assert result.failed == 0
    assert result.attempted > 0


# --- ANSI X9.19 ------------------------------------------------------------------------------


def test_x919_psec_vector() -> None:
    assert retail_mac(PSEC_KEY, PSEC_DATA).hex().upper() == PSEC_MAC[:8]
    assert retail_mac(PSEC_KEY, PSEC_DATA, length=8).hex().upper() == PSEC_MAC
    assert compute_mac(MacAlgorithm.X9_19, PSEC_KEY, PSEC_DATA).hex().upper() == PSEC_MAC
    verify_mac(MacAlgorithm.X9_19, PSEC_KEY, PSEC_DATA, bytes.fromhex(PSEC_MAC))


@pytest.mark.parametrize("data", [b"", b"x", b"12345678", b"123456789", bytes(range(64))])
def test_x919_matches_independent_formulation(data: bytes) -> None:
    key = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    assert compute_mac(MacAlgorithm.X9_19, key, data) == _independent_retail_mac(key, data)


def test_x919_padding_method_1() -> None:
    key = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    # empty data is one zero block; trailing zeros are indistinguishable (a property of method 1)
    assert retail_mac(key, b"") == retail_mac(key, bytes(8))
    assert retail_mac(key, b"abc") == retail_mac(key, b"abc\x00")


def test_x919_with_equal_halves_is_cbc_mac() -> None:
    # K1 = K2 degenerates to ANSI X9.9 / ISO 9797-1 algorithm 1 with single DES
    k = bytes.fromhex("0123456789ABCDEF")
    enc = Cipher(TripleDES(k * 3), modes.CBC(bytes(8))).encryptor()
    cbc = enc.update(PSEC_DATA + bytes(5)) + enc.finalize()
    assert retail_mac(k + k, PSEC_DATA, length=8) == cbc[-8:]


def test_x919_single_length_key_is_the_single_key_procedure() -> None:
    k = bytes.fromhex("0123456789ABCDEF")
    assert retail_mac(k, PSEC_DATA, length=8) == retail_mac(k + k, PSEC_DATA, length=8)
    assert compute_mac(MacAlgorithm.X9_19, k, PSEC_DATA) == _independent_retail_mac(k, PSEC_DATA)


@pytest.mark.parametrize("length", [24, 0, 7, 15])
def test_x919_key_must_be_single_or_double_length(length: int) -> None:
    with pytest.raises(CryptoError, match="8, 16 bytes"):
        retail_mac(bytes(length), b"data")


@pytest.mark.parametrize("length", [0, 3, 9])
def test_x919_output_length_bounds(length: int) -> None:
    with pytest.raises(CryptoError):
        retail_mac(PSEC_KEY, b"data", length=length)


# --- CUP ECB MAC -------------------------------------------------------------------------------


def test_cup_published_vector() -> None:
    assert cup_ecb_mac(CUP_TAK, CUP_MAB) == CUP_MAC
    assert compute_mac(MacAlgorithm.CUP_ECB, CUP_TAK, CUP_MAB) == CUP_MAC
    verify_mac(MacAlgorithm.CUP_ECB, CUP_TAK, CUP_MAB, CUP_MAC)
    assert _independent_cup_mac(CUP_TAK, CUP_MAB) == CUP_MAC


def test_cup_double_length_key_is_3des() -> None:
    key = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    assert cup_ecb_mac(key, CUP_MAB) == _independent_cup_mac(key, CUP_MAB)
    # K‖K is single DES with K
    assert cup_ecb_mac(CUP_TAK + CUP_TAK, CUP_MAB) == CUP_MAC
    assert cup_ecb_mac(key, CUP_MAB) != cup_ecb_mac(key[:8], CUP_MAB)


def test_cup_mac_is_uppercase_hex_ascii() -> None:
    mac = cup_ecb_mac(CUP_TAK, b"")
    assert len(mac) == MAC_SIZE
    assert mac == mac.upper()
    assert all(c in b"0123456789ABCDEF" for c in mac)


def test_cup_mac_is_blind_to_block_swaps_documented_weakness() -> None:
    swapped = CUP_MAB[8:16] + CUP_MAB[:8] + CUP_MAB[16:]
    assert swapped != CUP_MAB
    assert cup_ecb_mac(CUP_TAK, swapped) == CUP_MAC
    # X9.19 chains the blocks, so it notices
    assert retail_mac(PSEC_KEY, swapped) != retail_mac(PSEC_KEY, CUP_MAB)


@pytest.mark.parametrize("length", [0, 7, 9, 32])
def test_cup_key_length(length: int) -> None:
    with pytest.raises(CryptoError):
        cup_ecb_mac(bytes(length), b"data")


# --- verify ------------------------------------------------------------------------------------


def test_verify_mismatch_leaks_nothing() -> None:
    bad = b"8A9E91B9"
    with pytest.raises(CryptoError, match="mismatch") as info:
        verify_mac(MacAlgorithm.CUP_ECB, CUP_TAK, CUP_MAB, bad)
    text = str(info.value)
    for secret in ("8A9E91B8", "8A9E91B9", CUP_TAK.hex().upper(), CUP_TAK.hex()):
        assert secret not in text


@pytest.mark.parametrize("mac", [b"", b"8A9E91B", b"8A9E91B8\x00", bytes.fromhex(PSEC_MAC)[:4]])
def test_verify_rejects_wrong_length(mac: bytes) -> None:
    with pytest.raises(CryptoError, match="8 bytes"):
        verify_mac(MacAlgorithm.X9_19, PSEC_KEY, PSEC_DATA, mac)


def test_type_errors() -> None:
    with pytest.raises(TypeError):
        compute_mac("cup-ecb", CUP_TAK, CUP_MAB)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        compute_mac(MacAlgorithm.CUP_ECB, CUP_TAK, "0200")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        compute_mac(MacAlgorithm.X9_19, PSEC_KEY.decode(), PSEC_DATA)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        verify_mac(MacAlgorithm.CUP_ECB, CUP_TAK, CUP_MAB, "8A9E91B8")  # type: ignore[arg-type]


def test_bytes_like_inputs_accepted() -> None:
    # typed as bytes; bytearray and memoryview are accepted at run time too
    assert cup_ecb_mac(bytearray(CUP_TAK), memoryview(CUP_MAB)) == CUP_MAC  # type: ignore[arg-type]


# --- properties --------------------------------------------------------------------------------


@given(key=x919_keys, data=data_st)
def test_x919_property_matches_independent(key: bytes, data: bytes) -> None:
    assert compute_mac(MacAlgorithm.X9_19, key, data) == _independent_retail_mac(key, data)


@given(key=cup_keys, data=data_st)
def test_cup_property_matches_independent(key: bytes, data: bytes) -> None:
    assert compute_mac(MacAlgorithm.CUP_ECB, key, data) == _independent_cup_mac(key, data)


@given(
    alg=st.sampled_from(MacAlgorithm),
    key=x919_keys,
    data=st.binary(min_size=1, max_size=300),
    bit=st.integers(min_value=0),
)
def test_verify_accepts_own_mac_and_rejects_any_bit_flip(
    alg: MacAlgorithm, key: bytes, data: bytes, bit: int
) -> None:
    mac = compute_mac(alg, key, data)
    assert len(mac) == MAC_SIZE
    verify_mac(alg, key, data, mac)
    bit %= len(data) * 8
    flipped = bytearray(data)
    flipped[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(CryptoError):
        verify_mac(alg, key, bytes(flipped), mac)
