"""Host behaviour rules: overload, slowness and silence, configured on purpose.

A rule matches requests (optionally by MTI or transaction kind) and applies from the ``first``-th
match for ``count`` matches, every ``every``-th, with a probability drawn from a seeded RNG —
so "the host is overloaded at peak time" or "the 0200 after the sign-on is never answered"
are reproducible. The fault injector and ``posemu host --rule`` create these.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field
from typing import Protocol

from protocol.errors import ConfigError


class RuleAction(enum.Enum):
    """What a rule makes the host do (``posemu host --rule ACTION:…``)."""

    RESPOND = "respond"          # answer with the rule's response code instead of processing
    DELAY = "delay"              # process, but answer after ``delay`` clock seconds
    NO_RESPONSE = "no-response"  # process nothing, answer nothing (a hung host)
    DROP_RESPONSE = "drop-response"  # process the request, but its answer is lost on the way back
    CLOSE = "close"              # close the connection without answering
    WRONG_STAN = "wrong-stan"    # answer, but with another STAN (field 11): the answer matches nothing
    REFUSE = "refuse"            # refuse new connections (server level)
    GARBAGE = "garbage"          # process, but answer with something the terminal cannot use (``mode``)


GARBAGE_MODES = ("garbage", "truncated", "bad-bitmap", "no-rc")


@dataclass(slots=True)
class HostRule:
    """One behaviour rule: an action, the requests it applies to, its parameters (:meth:`parse` reads the CLI form)."""

    action: RuleAction
    rc: str = "96"
    delay: float = 0.0
    mti: str | None = None
    first: int = 1
    count: int | None = None
    every: int = 1
    probability: float = 1.0
    mode: str = "garbage"        # GARBAGE: garbage | truncated | bad-bitmap | no-rc
    seen: int = field(default=0, compare=False)
    applied: int = field(default=0, compare=False)

    @classmethod
    def parse(cls, text: str) -> HostRule:
        """Parse ``action[:key=value,…]``, e.g. ``respond:rc=91,every=2`` or ``delay:delay=30``."""
        head, _, rest = text.partition(":")
        try:
            action = RuleAction(head)
        except ValueError:
            raise ConfigError(f"unknown host rule action {head!r}; known: "
                              f"{', '.join(a.value for a in RuleAction)}") from None
        rule = cls(action)
        for item in filter(None, rest.split(",")):
            k, _, v = item.partition("=")
            try:
                if k == "rc":
                    rule.rc = v
                elif k == "delay":
                    rule.delay = float(v)
                elif k == "mti":
                    rule.mti = v
                elif k in ("first", "every"):
                    setattr(rule, k, int(v))
                elif k == "count":
                    rule.count = int(v)
                elif k == "probability":
                    rule.probability = float(v)
                elif k == "mode":
                    rule.mode = v
                else:
                    raise ConfigError(f"host rule {text!r}: unknown key {k!r}")
            except ValueError:
                raise ConfigError(f"host rule {text!r}: bad value for {k!r}") from None
        rule._check(text)
        return rule

    def _check(self, text: str) -> None:
        """Ranges a rule must keep (``every=0`` would divide by zero, ``delay=inf`` never answer)."""
        bad = rule_problem(self)
        if not bad and self.mti is not None and not (len(self.mti) == 4 and self.mti.isascii() and self.mti.isdigit()):
            bad = "mti must be 4 digits"
        if bad:
            raise ConfigError(f"host rule {text!r}: {bad}")

    def matches(self, mti: str, rng: random.Random) -> bool:
        if self.mti is not None and self.mti != mti:
            return False
        return takes_turn(self, rng)


class Paced(Protocol):
    """A rule's pacing: it acts from the ``first`` message it selects, on ``every`` n-th, at most
    ``count`` times, with ``probability``; ``seen`` and ``applied`` count as it goes."""

    seen: int
    applied: int
    first: int
    every: int
    count: int | None
    probability: float


class Answering(Paced, Protocol):
    """A paced rule that may answer: with ``rc``, after ``delay`` seconds, spoilt per ``mode``."""

    rc: str
    delay: float
    mode: str


def rule_problem(rule: Answering) -> str:
    """What is out of range in a rule (the bundled host's or the proxy's), or ``""``:
    ``every=0`` would divide by zero, ``delay=inf`` never answer."""
    if not (len(rule.rc) == 2 and rule.rc.isascii() and rule.rc.isalnum()):
        return "rc must be 2 letters or digits (field 39)"
    if not (rule.delay == rule.delay and 0 <= rule.delay <= 86_400):
        return "delay must be 0 … 86400 seconds"
    if rule.first < 1 or rule.every < 1 or (rule.count is not None and rule.count < 0):
        return "first and every must be at least 1, count at least 0"
    if not 0 <= rule.probability <= 1:
        return "probability must be 0 … 1"
    if rule.mode not in GARBAGE_MODES:
        return f"mode must be one of {', '.join(GARBAGE_MODES)}"
    return ""


def takes_turn(rule: Paced, rng: random.Random) -> bool:
    """``rule`` has just selected a message: does it act on this one? (Counts the message.) The one
    pacing of the bundled host's rules and the proxy's message rules."""
    rule.seen += 1
    if rule.seen < rule.first or (rule.seen - rule.first) % rule.every:
        return False
    if rule.count is not None and rule.applied >= rule.count:
        return False
    if rule.probability < 1.0 and rng.random() >= rule.probability:
        return False
    rule.applied += 1
    return True


@dataclass(slots=True)
class HostRules:
    """The host's rules in order, and the seeded randomness their ``probability`` draws from."""

    rules: list[HostRule] = field(default_factory=list)
    seed: int = 0
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def add(self, rule: HostRule) -> None:
        self.rules.append(rule)

    def remove(self, rule: HostRule) -> None:
        if rule in self.rules:
            self.rules.remove(rule)

    def clear(self) -> None:
        self.rules.clear()

    def first_match(self, mti: str) -> HostRule | None:
        hit = None
        for r in self.rules:
            if r.action is RuleAction.REFUSE:
                continue
            if r.matches(mti, self.rng) and hit is None:
                hit = r
        return hit

    def refuse_connection(self) -> bool:
        return any(r.action is RuleAction.REFUSE and r.matches("conn", self.rng) for r in self.rules)
