"""What a fault run is checked against: the result of a regression case and its checks — screens in
order, outcome, exactly the expected diagnosis, the journal (nothing lost, duplicated or pending;
every unknown money transaction reversed) and the money at the host. Pure: outcomes, journals and
diagnoses in, :class:`Check` s out (:mod:`faults.runner` runs the world they are taken from).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from emulator.journal import Entry, Journal, Reversal, Status
from emulator.terminal import Outcome
from faults.diagnose import Diagnosis
from faults.model import Fault, FaultSpec, Preset

if TYPE_CHECKING:
    from emulator.host.store import HostStore

@dataclass(slots=True)
class Check:
    """One assertion of a regression scenario: its name, whether it held, and why not."""

    name: str
    ok: bool
    detail: str = ""


@dataclass(slots=True)
class RunResult:
    """The result of one regression case: the faults, the outcomes, the codes shown, the diagnosis and
    the checks."""

    fault: Fault | None
    preset: Preset | None
    specs: list[FaultSpec] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)
    diagnosis: Diagnosis | None = None
    checks: list[Check] = field(default_factory=list)
    virtual_s: float = 0.0
    wall_s: float = 0.0
    trace: list[str] = field(default_factory=list)
    error: str | None = None
    skipped: str | None = None          # why this run could not happen here (e.g. no pcscd)
    struck: dict[str, bool] = field(default_factory=dict)   # scoring only: did each fault change anything?
    label: str = ""                                          # a scenario file's name

    @property
    def ok(self) -> bool:
        return self.skipped is None and self.error is None and all(c.ok for c in self.checks)

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        if self.fault is not None and self.preset is not None:
            return f"{self.fault.id}[{self.preset.name}]"
        return " + ".join(str(s) for s in self.specs) or "no fault"

    @property
    def scenario(self) -> Preset | None:
        return self.preset


def final_outcome(outcomes: Sequence[Outcome]) -> Outcome | None:
    """What a run ended with: its last transaction (a sign-on only when nothing else ran)."""
    for out in reversed(outcomes):
        if out.kind not in ("sign_on", "sign_off"):
            return out
    return outcomes[-1] if outcomes else None


def subsequence(expected: Sequence[str], seen: Sequence[str]) -> bool:
    it = iter(seen)
    return all(any(code == s for s in it) for code in expected)


def journal_checks(journal: Journal, preset: Preset, *, store: HostStore | None = None, pan: str = "",
                   balance_before: int = 0) -> list[Check]:
    """The journal's checks: nothing pending or duplicated, every unknown money transaction reversed
    and acknowledged, what the preset says the journal shows; with the bundled host's ``store``, the
    cardholder's balance moved by exactly what the approved transactions moved."""
    entries = journal.entries(1000)
    checks = []
    pending = [e for e in entries if e.status is Status.PENDING]
    checks.append(Check("journal: nothing left pending", not pending, f"{len(pending)} pending"))
    stans = [e.stan for e in entries]
    checks.append(Check("journal: no duplicated transaction", len(stans) == len(set(stans)), ""))
    unknown = [e for e in entries if e.kind in _MONEY_KINDS and e.status is Status.UNKNOWN]
    unreversed = [e for e in unknown if e.reversal is not Reversal.DONE]
    checks.append(Check("journal: every unknown purchase reversed and acknowledged", not unreversed,
                        f"{len(unreversed)} not reversed"))
    want = preset.journal
    txn = [e for e in entries if e.kind in ("balance", *_MONEY_KINDS)]
    last = txn[-1] if txn else None
    if want == "none":
        ok, got = not txn, f"{len(txn)} entries"
    elif want == "reversed":
        ok = any(e.reversal is Reversal.DONE for e in txn)
        got = ", ".join(f"{e.status.value}/{e.reversal.value}" for e in txn)
    elif want == "any":
        ok, got = True, ""
    else:
        ok = last is not None and last.status.value == want
        got = last.status.value if last else "no entry"
    checks.append(Check(f"journal shows: {want}", ok, got))
    if store is not None:
        card = store.card(pan)
        if card is not None:
            after = store.balance(card.account_id)[0]
            spent = -journal_money(journal, txn)
            checks.append(Check("money: balance moved by approved purchases only",
                                after == balance_before - spent,
                                f"before {balance_before}, after {after}, approved purchases {spent}"))
    return checks


_MONEY_KINDS = ("purchase", "void", "refund", "preauth", "preauth_void", "completion", "completion_void")


def journal_money(journal: Journal, entries: list[Entry]) -> int:
    """What the approved transactions of the journal moved on the cardholder's account (a
    pre-authorization's hold counts as moved): the host's balance must have moved by exactly this."""
    def amount_of(entry_id: int | None) -> int:
        try:
            return journal.get(entry_id).amount if entry_id is not None else 0
        except KeyError:
            return 0

    total = 0
    for e in entries:
        if e.status is not Status.APPROVED:
            continue
        if e.kind in ("purchase", "preauth"):
            total -= e.amount
        elif e.kind in ("void", "refund", "preauth_void"):
            total += e.amount
        elif e.kind == "completion":
            total += amount_of(e.original_id) - e.amount
        elif e.kind == "completion_void":
            completion = journal.get(e.original_id) if e.original_id is not None else None
            total += e.amount - (amount_of(completion.original_id) if completion is not None else 0)
    return total


def check_diagnosis(diag: Diagnosis, expected: Sequence[str]) -> Check:
    """Exactly the expected groups are named, the first expected one on top."""
    named = diag.groups
    ok = set(named) == set(expected) and (not expected or named[0] == expected[0])
    return Check("diagnosis", ok, f"expected {list(expected)}, named {named} "
                 f"({', '.join(f'{f.group.id} {f.confidence:.2f}' for f in diag.findings)})")


def _codes_in(trace: Sequence[Any]) -> set[str]:
    out: set[str] = set()
    for e in trace:
        code = e.data.get("code")
        if isinstance(code, str):
            out.add(code)
    return out
