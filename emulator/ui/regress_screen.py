"""A regression run started from the UI: every fault scenario through the real stack, with
progress, a live results table and cancel (Esc). The run happens in a worker thread (each
scenario on its own virtual clock), so the terminal UI never freezes."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, ProgressBar, Static
from textual.worker import Worker, get_current_worker

_RESULT_STYLE = {"ok": "bold #2aa198", "FAIL": "bold #dc322f", "skipped": "#839496"}


class RegressScreen(ModalScreen[None]):
    """The fault-regression run (``e``): every scenario, or the ``only`` ones, with a progress bar,
    a live results table and Esc to cancel (then to close)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q", "cancel", "Cancel / close")]

    def __init__(self, only: list[str] | None = None) -> None:
        super().__init__()
        self.only = only
        self.passed = self.failed = self.skipped = 0
        self.total = 0
        self.finished = False
        self.cancelled = False
        self._worker: Worker[None] | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="regress-body"):
            yield Label("Fault regression run (Esc cancels, then closes)", classes="dialog-title")
            # the summary and the progress stay above the table: always in view, whatever the size
            yield Static("starting…", id="regress-summary")
            yield ProgressBar(id="regress-progress", show_eta=False)
            yield DataTable(id="regress-table", zebra_stripes=True, cursor_type="row")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("result", "fault", "scenario", "causes", "last screens")   # the verdict first
        self._worker = self.run_worker(self._run, thread=True, exclusive=True, group="regress", exit_on_error=False)

    def _run(self) -> None:
        from faults.regress import bundled_scenario_files, catalogue_cases, load, run_cases

        worker = get_current_worker()
        cat = load()
        cases = catalogue_cases(cat, self.only)
        if not self.only:
            cases += bundled_scenario_files(cat)
        self.app.call_from_thread(self._start, len(cases))
        for case in cases:
            if worker.is_cancelled:
                break
            result = run_cases([case])[0]
            self.app.call_from_thread(self._add, result)
        self.app.call_from_thread(self._done, worker.is_cancelled)

    def _start(self, total: int) -> None:
        self.total = total
        self.query_one(ProgressBar).update(total=total, progress=0)

    def _add(self, r: Any) -> None:
        if r.skipped:
            self.skipped += 1
            result = "skipped"
        elif r.ok:
            self.passed += 1
            result = "ok"
        else:
            self.failed += 1
            result = "FAIL"
        table = self.query_one(DataTable)
        table.add_row(Text(result, _RESULT_STYLE[result]), r.fault.id, r.scenario.name, " ".join(r.fault.causes),
                      " ".join(r.codes[-3:]))
        table.move_cursor(row=table.row_count - 1)        # the newest result in view
        self.query_one(ProgressBar).advance(1)
        self._summary()

    def _summary(self) -> None:
        state = "cancelled" if self.cancelled else ("done" if self.finished else "running")
        self.query_one("#regress-summary", Static).update(
            f"{state}: {self.passed} passed, {self.failed} failed, {self.skipped} skipped of {self.total}")

    def _done(self, cancelled: bool) -> None:
        self.finished = True
        self.cancelled = cancelled
        self._summary()

    def action_cancel(self) -> None:
        if self.finished or self._worker is None:
            self.dismiss(None)
            return
        self.cancelled = True
        self._worker.cancel()
        self._summary()
