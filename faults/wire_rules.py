"""The message rules of ``posemu proxy`` (:mod:`faults.wire`): which messages a rule selects — by
MTI, processing code, any field's value or the nth occurrence — and what it does to them, in the
bundled host's rule vocabulary (:class:`emulator.host.rules.HostRule`) plus what a proxy adds
(``drop``, ``duplicate``, ``corrupt``, ``rewrite``). Pure: messages in, decisions out.
"""

from __future__ import annotations

import enum
import random
import re
from dataclasses import dataclass, field

from emulator.host.rules import HostRule, rule_problem, takes_turn
from protocol.errors import ConfigError
from protocol.iso import Message


# --- message rules ----------------------------------------------------------------------------------
class Verb(enum.Enum):
    """What a message rule of the proxy does to the messages it selects."""

    RESPOND = "respond"              # answer on the host's behalf with ``rc``; the host never sees it
    DELAY = "delay"                  # hold the message ``delay`` seconds (requests; dir=response: answers)
    NO_RESPONSE = "no-response"      # the host hangs: the request is swallowed, nothing comes back
    DROP = "drop"                    # the request is lost on the way to the host (as no-response)
    DROP_RESPONSE = "drop-response"  # the host processes it; its answer is lost on the way back
    CLOSE = "close"                  # the connection is closed instead of answering
    WRONG_STAN = "wrong-stan"        # the answer comes back with another STAN (field 11)
    GARBAGE = "garbage"              # the answer comes back spoilt (``mode``)
    REFUSE = "refuse"                # new connections are refused
    DUPLICATE = "duplicate"          # the message is delivered twice
    CORRUPT = "corrupt"              # one bit of the message is flipped
    REWRITE = "rewrite"              # fields set (``setN=VALUE``) or removed (``unset=N+M``)


_REQUEST_ONLY = {Verb.RESPOND, Verb.NO_RESPONSE, Verb.DROP, Verb.DROP_RESPONSE, Verb.CLOSE,
                 Verb.WRONG_STAN, Verb.GARBAGE}
_FIELD_KEY = re.compile(r"^f(\d{1,3})$")
_SET_KEY = re.compile(r"^set(\d{1,3})$")


def _mtis(text: str, where: str) -> frozenset[str]:
    out = frozenset(filter(None, text.split("+")))
    if not out or not all(len(m) == 4 and m.isascii() and m.isdigit() for m in out):
        raise ConfigError(f"{where}: mti must be 4 digits (several joined with +), got {text!r}")
    return out


def _fieldno(text: str, where: str) -> int:
    n = int(text)
    if not 2 <= n <= 128 or n == 65:
        raise ConfigError(f"{where}: field {n} is not a data field (2…128)")
    return n


@dataclass(slots=True)
class MessageRule:
    """One message rule: which messages (selection) and what happens to them (action).

    >>> r = MessageRule.parse("rewrite:mti=0210,set39=96,unset=54")
    >>> r.action.value, sorted(r.mti or ()), r.set_fields, r.unset_fields, r.response_side
    ('rewrite', ['0210'], {39: '96'}, (54,), True)
    >>> MessageRule.parse("delay:mti=0400,delay=30").response_side
    False
    """

    action: Verb
    text: str = ""
    mti: frozenset[str] | None = None
    pc: str | None = None
    fields: dict[int, str] = field(default_factory=dict)
    first: int = 1
    count: int | None = None
    every: int = 1
    probability: float = 1.0
    rc: str = "96"
    delay: float = 0.0
    mode: str = "garbage"
    set_fields: dict[int, str] = field(default_factory=dict)
    unset_fields: tuple[int, ...] = ()
    direction: str | None = None          # "request" | "response"; None: the action's default
    seen: int = field(default=0, compare=False)
    applied: int = field(default=0, compare=False)

    @classmethod
    def parse(cls, text: str) -> MessageRule:
        """``ACTION[:key=value,…]`` (see the module docstring); a mistake is a :class:`ConfigError`."""
        head, _, rest = text.strip().partition(":")
        where = f"message rule {text!r}"
        try:
            action = Verb(head.strip())
        except ValueError:
            raise ConfigError(f"{where}: unknown action {head!r}; known: {', '.join(a.value for a in Verb)}") from None
        rule = cls(action, text.strip())
        nth: int | None = None
        for item in filter(None, (x.strip() for x in rest.split(","))):
            k, eq, v = item.partition("=")
            if not eq:
                raise ConfigError(f"{where}: {item!r} is not key=value")
            try:
                if k == "mti":
                    rule.mti = _mtis(v, where)
                elif k == "pc":
                    if not (v.isascii() and v.isdigit() and 1 <= len(v) <= 6):
                        raise ConfigError(f"{where}: pc is the start of the processing code (1–6 digits)")
                    rule.pc = v
                elif (m := _FIELD_KEY.match(k)) is not None:
                    rule.fields[_fieldno(m.group(1), where)] = v
                elif (m := _SET_KEY.match(k)) is not None:
                    rule.set_fields[_fieldno(m.group(1), where)] = v
                elif k == "unset":
                    rule.unset_fields = tuple(_fieldno(x, where) for x in v.split("+") if x)
                elif k in ("first", "every"):
                    setattr(rule, k, int(v))
                elif k == "count":
                    rule.count = int(v)
                elif k == "nth":
                    nth = int(v)
                elif k == "probability":
                    rule.probability = float(v)
                elif k == "rc":
                    rule.rc = v
                elif k == "delay":
                    rule.delay = float(v)
                elif k == "mode":
                    rule.mode = v
                elif k == "dir":
                    if v not in ("request", "response"):
                        raise ConfigError(f"{where}: dir must be request or response")
                    rule.direction = v
                else:
                    raise ConfigError(f"{where}: unknown key {k!r} (known: mti, pc, fN, nth, first, count, every, "
                                      "probability, rc, delay, mode, setN, unset, dir)")
            except ValueError:
                raise ConfigError(f"{where}: bad value for {k!r}: {v!r}") from None
        if nth is not None:
            if nth < 1:
                raise ConfigError(f"{where}: nth must be at least 1")
            rule.first, rule.count = nth, 1
        rule._check(where)
        return rule

    @classmethod
    def from_host_rule(cls, h: HostRule) -> MessageRule:
        """A bundled-host rule (a catalogue host fault) played by the proxy."""
        return cls(Verb(h.action.value), f"{h.action.value} (host rule)",
                   mti=None if h.mti is None else frozenset({h.mti}), first=h.first, count=h.count, every=h.every,
                   probability=h.probability, rc=h.rc, delay=h.delay, mode=h.mode)

    def _check(self, where: str) -> None:
        bad = rule_problem(self)
        if bad:
            raise ConfigError(f"{where}: {bad}")
        if self.action is Verb.REWRITE and not (self.set_fields or self.unset_fields):
            bad = "rewrite needs setN=VALUE or unset=N"
        elif self.action in _REQUEST_ONLY and (self.direction == "response" or
                                               any(_is_response(m) for m in self.mti or ())):
            bad = f"{self.action.value} acts on requests (and their answers): give a request MTI"
        if bad:
            raise ConfigError(f"{where}: {bad}")

    @property
    def response_side(self) -> bool:
        """Does this rule look at answers (else at requests)?"""
        if self.direction is not None:
            return self.direction == "response"
        if self.mti:
            return all(_is_response(m) for m in self.mti)
        return self.action is Verb.REWRITE

    def selects(self, msg: Message) -> bool:
        """Does the message fit the selection (MTI, processing code, field values)? No counting."""
        if self.mti is not None and msg.mti not in self.mti:
            return False
        if self.pc is not None:
            pc = msg.get(3)
            if not isinstance(pc, str) or not pc.startswith(self.pc):
                return False
        for n, want in self.fields.items():
            v = msg.get(n)
            if v is None or (v.hex().upper() if isinstance(v, bytes) else v) != want:
                return False
        return True

    def matches(self, msg: Message, rng: random.Random) -> bool:
        """Selection, then first/every/count/probability (as :meth:`HostRule.matches`)."""
        return self.selects(msg) and takes_turn(self, rng)


def _is_response(mti: str) -> bool:
    return len(mti) == 4 and mti[2].isdigit() and int(mti[2]) % 2 == 1


class ProxyRules:
    """The rules acting now: message rules, and host rules (catalogue faults) played by the proxy.
    A :class:`faults.injectors.RuleSink` for the seam's host-rule actions."""

    def __init__(self, seed: int = 7) -> None:
        self.rules: list[MessageRule] = []
        self._host: dict[int, MessageRule] = {}
        self.rng = random.Random(seed)

    def add(self, rule: HostRule | MessageRule) -> None:
        if isinstance(rule, HostRule):
            mr = MessageRule.from_host_rule(rule)
            self._host[id(rule)] = mr
            rule = mr
        self.rules.append(rule)

    def remove(self, rule: HostRule | MessageRule) -> None:
        if isinstance(rule, HostRule):
            mr = self._host.pop(id(rule), None)
            if mr is None:
                return
            rule = mr
        if rule in self.rules:
            self.rules.remove(rule)

    def first(self, msg: Message, response: bool) -> MessageRule | None:
        """The first rule that takes this message (every rule that selects it counts it)."""
        hit = None
        for r in self.rules:
            if r.action is Verb.REFUSE or r.response_side != response:
                continue
            if r.matches(msg, self.rng) and hit is None:
                hit = r
        return hit

    def refuse(self) -> bool:
        return any(r.action is Verb.REFUSE for r in self.rules)
