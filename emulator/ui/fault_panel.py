"""The fault panel: browse the catalogue by layer and cause id, switch faults on and off, set
their parameters, and see which are active. Active faults apply to the next terminal action.

Keyboard first: the tree takes the focus when the pane opens (``f``); the arrows move through the
faults (the details follow), **Enter** switches the highlighted fault on or off (the terminal's
确认 key never sees that Enter), **Esc** gives the keys back to the terminal. With the mouse a
single click only selects a fault; a double click, or the *Switch on* button, arms it.

Everything about the fault package goes through :class:`emulator.ui.faults_adapter.FaultsAdapter`.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Button, Input, Label, Static, Tree

from emulator.ui.faults_adapter import ActiveFault, FaultInfo, FaultsAdapter


class FaultTree(Tree[str]):
    """The catalogue tree: Enter or a double click selects (arms) a fault; a single click only
    moves the cursor to it; Esc hands the keys back to the terminal."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Arm / disarm", show=False),
        Binding("escape", "leave", "Back to the terminal", show=False),
    ]

    async def _on_click(self, event: events.Click) -> None:
        # Textual then runs Tree's own click handler (a layer folds, a double click arms) unless
        # the default is prevented: a single click on a fault only moves the cursor to it
        line = event.style.meta.get("line")
        node = self.get_node_at_line(line) if isinstance(line, int) else None
        if not isinstance(line, int) or node is None or node.children or node.allow_expand or event.chain >= 2:
            return
        event.prevent_default()
        async with self.lock:
            self.cursor_line = line

    def action_leave(self) -> None:
        self.screen.set_focus(None)


class FaultPanel(Vertical):
    """Catalogue tree on top, the highlighted fault's details and parameters below."""

    class Changed(Message):
        """The set of active faults changed."""

        def __init__(self, active: tuple[ActiveFault, ...]) -> None:
            super().__init__()
            self.active = active

    def __init__(self, adapter: FaultsAdapter, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.adapter = adapter
        self.active: dict[str, ActiveFault] = {}
        self.current: FaultInfo | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="faults-active")
        yield Vertical(id="faults-body")

    async def on_mount(self) -> None:
        await self.populate()

    # --- building --------------------------------------------------------------------------
    async def populate(self) -> None:
        self.adapter.load()
        body = self.query_one("#faults-body", Vertical)
        await body.remove_children()
        if not self.adapter.available:
            await body.mount(Static(Text(self.adapter.reason or "fault catalogue not available", "#b58900"),
                              id="faults-missing"),
                       Button("Reload catalogue", id="faults-reload", compact=True))
            self._show_active()
            return
        tree = FaultTree("catalogue", id="faults-tree")
        tree.show_root = False
        tree.guide_depth = 2
        for layer, faults in self.adapter.by_layer().items():
            node = tree.root.add(layer, expand=True)
            for f in faults:
                node.add_leaf(self._label(f), data=f.id)
        await body.mount(tree, VerticalScroll(id="fault-detail"))
        self._show_active()

    def _label(self, f: FaultInfo) -> Text:
        t = Text()
        t.append("● " if f.id in self.active else "○ ", "bold #dc322f" if f.id in self.active else "#839496")
        t.append(f.id, "bold" if f.id in self.active else "")
        if f.cause_ids:
            t.append("  " + " ".join(f.cause_ids), "#839496")
        if f.title:
            t.append("  " + f.title)
        return t

    def _refresh_labels(self) -> None:
        for tree in self.query("#faults-tree").results(Tree):
            for layer in tree.root.children:
                for leaf in layer.children:
                    info = self.adapter.get(str(leaf.data))
                    if info is not None:
                        leaf.set_label(self._label(info))

    def _show_active(self) -> None:
        t = Text("active: ", "bold")
        if self.active:
            t.append(", ".join(a.spec() for a in self.active.values()), "bold #dc322f")
            t.append("  (apply to the next action)", "#839496")
        else:
            t.append("none", "#839496")
        if self.adapter.available:
            t.append("\n↑↓ choose · Enter arm/disarm · Esc back to the terminal", "#839496")
        self.query_one("#faults-active", Static).update(t)

    async def show_detail(self, info: FaultInfo) -> None:
        self.current = info
        detail = self.query_one("#fault-detail", VerticalScroll)
        await detail.remove_children()
        lines = Text()
        lines.append(info.id, "bold")
        lines.append(f"  [{info.layer}]  causes {' '.join(info.cause_ids) or '—'}\n", "#839496")
        if info.title:
            lines.append(info.title + "\n")
        if info.messages:
            lines.append("screens: " + ", ".join(info.messages) + "\n", "#839496")
        if info.card:
            lines.append(f"card: {info.card}   injector: {info.injector}\n", "#839496")
        if info.detect:
            lines.append("detect: " + info.detect + "\n", "#839496")
        if info.remedy:
            lines.append("remedy: " + info.remedy + "\n", "#839496")
        widgets: list[Static | Horizontal | Button] = [Static(lines)]
        current = dict(self.active[info.id].params) if info.id in self.active else {}
        for p in info.params:
            rng = ""
            if p.minimum is not None or p.maximum is not None:
                rng = f" {p.minimum if p.minimum is not None else ''}…{p.maximum if p.maximum is not None else ''}"
            row = Horizontal(Label(f"{p.name}{rng} {p.unit}".rstrip(), classes="param-label"),
                             Input(value=current.get(p.name, p.default), placeholder=p.default, compact=True,
                                   id=f"param-{_safe_id(p.name)}", classes="param-input"),
                             classes="param-row")
            widgets.append(row)
        on = info.id in self.active
        widgets.append(Button("Switch off" if on else "Switch on", id="fault-toggle", compact=True,
                              variant="error" if on else "primary"))
        widgets.append(Static(id="fault-error"))
        await detail.mount(*widgets)

    # --- events ----------------------------------------------------------------------------
    async def on_tree_node_highlighted(self, event: Tree.NodeHighlighted[str]) -> None:
        if event.node.data is not None:
            info = self.adapter.get(str(event.node.data))
            if info is not None:
                await self.show_detail(info)

    async def on_tree_node_selected(self, event: Tree.NodeSelected[str]) -> None:
        if event.node.data is not None:
            await self.toggle(str(event.node.data))

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "faults-reload":
            event.stop()
            self.adapter.load(force=True)
            await self.populate()
        elif event.button.id == "fault-toggle" and self.current is not None:
            event.stop()
            await self.toggle(self.current.id)

    def on_input_changed(self, event: Input.Changed) -> None:
        if self.current is not None and self.current.id in self.active:
            self.active[self.current.id] = self._collect(self.current)
            self._show_active()
            self.post_message(self.Changed(tuple(self.active.values())))

    def _collect(self, info: FaultInfo) -> ActiveFault:
        values: list[tuple[str, str]] = []
        for p in info.params:
            inputs = self.query(f"#param-{_safe_id(p.name)}").results(Input)
            value = next((i.value.strip() for i in inputs), "")
            if value and value != p.default:
                values.append((p.name, value))
        return ActiveFault(info.id, tuple(values))

    async def drop(self, fault_id: str, reason: str) -> None:
        """Switch a fault off that its target refused (shown in the details' error line)."""
        if self.active.pop(fault_id, None) is None:
            return
        self._refresh_labels()
        self._show_active()
        info = self.adapter.get(fault_id)
        if info is not None and self.current is info:
            await self.show_detail(info)
        for w in self.query("#fault-error").results(Static):
            w.update(Text(reason, "#dc322f"))

    def focus_tree(self) -> bool:
        """Give the tree the keyboard focus (when the pane opens); ``False`` without a catalogue."""
        for tree in self.query("#faults-tree").results(FaultTree):
            tree.focus()
            if tree.cursor_node is None or tree.cursor_node.data is None:
                tree.cursor_line = 1              # the first fault (line 0 is its layer)
            return True
        return False

    async def toggle(self, fault_id: str) -> None:
        """Switch a fault on (with the parameters shown) or off."""
        info = self.adapter.get(fault_id)
        if info is None:
            return
        if fault_id in self.active:
            del self.active[fault_id]
        else:
            active = self._collect(info) if self.current is info else ActiveFault(info.id)
            err = self.adapter.check(active)
            errors = self.query("#fault-error").results(Static)
            for w in errors:
                w.update(Text(err or "", "#dc322f"))
            if err:
                return
            self.active[fault_id] = active
        self._refresh_labels()
        self._show_active()
        if self.current is info:
            await self.show_detail(info)
        self.post_message(self.Changed(tuple(self.active.values())))


def _safe_id(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
