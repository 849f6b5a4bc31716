"""Every entry of the terminal's transition table is exercised, and none is dead (issue 10's idea).

For each (state, event) → state of :data:`emulator.fsm.TRANSITIONS` the test drives a fresh
:class:`Machine` from IDLE to the entry's source by the shortest sequence of events, fires the
event and checks where it lands; a state no sequence reaches fails the test, and so does a state
from which the terminal can never get back to IDLE, or an event the terminal never fires.
"""

from __future__ import annotations

import re
from collections import deque
from pathlib import Path

import pytest

from emulator import fsm
from emulator.fsm import TRANSITIONS, Event, Machine, State


def _paths() -> dict[State, list[Event]]:
    """The shortest event sequence from IDLE to every reachable state."""
    paths: dict[State, list[Event]] = {State.IDLE: []}
    todo = deque([State.IDLE])
    while todo:
        s = todo.popleft()
        for (src, ev), dst in TRANSITIONS.items():
            if src is s and dst not in paths:
                paths[dst] = [*paths[s], ev]
                todo.append(dst)
    return paths


PATHS = _paths()


def test_every_state_is_reachable_from_idle() -> None:
    unreachable = [s.value for s in State if s not in PATHS]
    assert not unreachable, f"states no event sequence reaches: {unreachable}"
    assert fsm.reachable() == set(State)


def test_every_state_leads_back_to_idle() -> None:
    back = {State.IDLE}
    changed = True
    while changed:
        changed = False
        for (src, _), dst in TRANSITIONS.items():
            if dst in back and src not in back:
                back.add(src)
                changed = True
    assert back == set(State), f"dead ends: {sorted(s.value for s in set(State) - back)}"


ENTRIES = sorted(TRANSITIONS, key=lambda k: (k[0].value, k[1].value))


@pytest.mark.parametrize(("src", "event"), ENTRIES, ids=[f"{s.value}--{e.value}" for s, e in ENTRIES])
def test_table_entry(src: State, event: Event) -> None:
    m = Machine()
    for ev in PATHS[src]:
        m.fire(ev)
    assert m.state is src
    assert m.fire(event) is TRANSITIONS[(src, event)]
    assert m.path[-1] == (src, event, TRANSITIONS[(src, event)])


TERMINAL_MODULES = ("terminal", "card_session", "online", "sign_on", "settlement", "reversals")


def test_the_terminal_fires_every_event_of_the_table() -> None:
    """An event in the table that the terminal never fires is an entry no real flow can take."""
    here = Path(fsm.__file__).parent         # the terminal and the collaborators that fire through its machine
    source = "\n".join((here / f"{name}.py").read_text(encoding="utf-8") for name in TERMINAL_MODULES)
    fired = set(re.findall(r"Event\.([A-Z_]+)", source))
    used = {ev for (_, ev) in TRANSITIONS}
    missing = sorted(ev.name for ev in used if ev.name not in fired and ev is not Event.ABORT)
    assert not missing, f"events of the table the terminal never fires: {missing}"
    assert "machine.abort()" in source          # ABORT: Machine.abort(), from the terminal's abort paths
