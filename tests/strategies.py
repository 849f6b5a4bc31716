"""Hypothesis strategies shared by the tests: valid ISO 8583 messages for a profile."""

from __future__ import annotations

import string

from hypothesis import strategies as st

from protocol.iso import Message, Value
from protocol.specs import Kind, Profile

PRINTABLE = string.ascii_letters + string.digits + " .,-/:=*#"


def field_value(profile: Profile, key: str) -> st.SearchStrategy[Value]:
    spec = profile.spec[key]
    kind = profile.kinds[key]
    fixed = spec["len_type"] == 0
    max_len = int(spec["max_len"])
    if kind is Kind.B:
        # binary fields: bytes (fixed fields exactly max_len)
        n = st.just(max_len) if fixed else st.integers(0 if not fixed else max_len, min(max_len, 64))
        return n.flatmap(lambda k: st.binary(min_size=k, max_size=k))
    size = st.just(max_len) if fixed else st.integers(0, min(max_len, 40))
    if kind is Kind.N:
        alphabet = string.digits
    elif kind is Kind.Z:
        alphabet = string.digits + "="
    else:
        alphabet = PRINTABLE
    return size.flatmap(lambda k: st.text(alphabet, min_size=k, max_size=k))


@st.composite
def messages(draw: st.DrawFn, profile: Profile) -> Message:
    keys = sorted(profile.kinds, key=int)
    # CUP has no secondary bitmap fields; ISO87 may use 65–128 (secondary bitmap).
    chosen = draw(st.lists(st.sampled_from(keys), unique=True, max_size=12))
    fields: dict[int, Value] = {int(k): draw(field_value(profile, k)) for k in chosen}
    mti = draw(st.sampled_from(["0100", "0110", "0200", "0210", "0400", "0410", "0800", "0810"]))
    header = draw(st.binary(min_size=profile.header_len, max_size=profile.header_len))
    return Message(mti, fields, header)
