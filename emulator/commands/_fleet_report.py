"""``posemu fleet --html``: one self-contained HTML file with the run's figures and plots (plotly, offline).

Plots: host round trip over time (one trace per message name: MTI/processing code), a histogram of
round trips, transactions per second over time by outcome. plotly's JavaScript is embedded once, so
the file opens without a network.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from typing import Any

from protocol.errors import EnvironmentProblem

MAX_POINTS = 20_000
"""Round-trip points drawn in the scatter plot (evenly thinned beyond this; the histogram uses all)."""


def render_html(report: Any) -> str:
    """The report as HTML (``report``: a :class:`faults.fleet.FleetReport`)."""
    try:
        import plotly.graph_objects as go
        import plotly.io as pio
    except ImportError:
        raise EnvironmentProblem("--html needs plotly: pip install 'posemu[report]'") from None
    doc = report.to_json()
    ex = report.stats.exchanges
    step = max(1, len(ex) // MAX_POINTS)
    scatter = go.Figure()
    names = sorted({e.name for e in ex})
    for name in names:
        pts = [e for e in ex[::step] if e.name == name and e.rtt is not None]
        scatter.add_trace(go.Scattergl(x=[e.t for e in pts], y=[e.rtt * 1e3 for e in pts], mode="markers",
                                       name=name, marker={"size": 4}))
    scatter.update_layout(title="Host round trip over time", xaxis_title="seconds since start (run clock)",
                          yaxis_title="round trip (ms)", height=420)
    hist = go.Figure()
    for name in names:
        hist.add_trace(go.Histogram(x=[e.rtt * 1e3 for e in ex if e.name == name and e.rtt is not None], name=name,
                                    opacity=0.75, nbinsx=60))
    hist.update_layout(barmode="overlay", title="Host round trip histogram", xaxis_title="round trip (ms)",
                       yaxis_title="exchanges", height=380)
    tps = go.Figure()
    ok: Counter[int] = Counter()
    bad: Counter[int] = Counter()
    for t in report.stats.txns:
        (ok if t.approved else bad)[int(t.t)] += 1
    seconds = list(range(0, int(report.elapsed_clock) + 1))
    tps.add_trace(go.Bar(x=seconds, y=[ok[s] for s in seconds], name="approved"))
    tps.add_trace(go.Bar(x=seconds, y=[bad[s] for s in seconds], name="not approved"))
    tps.update_layout(barmode="stack", title="Transactions started per second", xaxis_title="seconds since start",
                      yaxis_title="transactions", height=320)
    figs = [pio.to_html(f, full_html=False, include_plotlyjs=(i == 0)) for i, f in enumerate((scatter, hist, tps))]
    return _page(doc, figs)


def _table(title: str, rows: dict[str, Any]) -> str:
    body = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_fmt(v))}</td></tr>" for k, v in rows.items())
    return f"<h2>{html.escape(title)}</h2><table>{body}</table>"


def _fmt(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False) if isinstance(v, dict | list) else str(v)


def _page(doc: dict[str, Any], figs: list[str]) -> str:
    rec = doc["reconciliation"]
    verdict = "reconciled" if rec["ok"] else "NOT reconciled"
    faults = {k: f"injected {v['injected']}, failed {v['failed']}, diagnosed {v['diagnosed']} (top {v['top']})"
              for k, v in doc["faults"].items()}
    parts = [
        f"<h1>posemu fleet: {doc['options']['terminals']} terminals, {verdict}</h1>",
        _table("Run", {**doc["options"], **doc["elapsed"]}),
        _table("Transactions", doc["transactions"]),
        _table("Host round trip (ms)", doc["latency_ms"]),
        *figs,
        _table("Screens", doc["screens"]),
        _table("Response codes", doc["response_codes"]),
        _table("Exchanges (MTI/processing code)", doc["exchanges"]),
        _table("Reversals", doc["reversals"]),
        _table("Faults", faults or {"none": ""}),
        _table("Reconciliation", rec),
    ]
    style = ("body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin-bottom:1em}"
             "td{border:1px solid #ccc;padding:2px 8px;font-size:90%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>posemu fleet</title><style>{style}</style>"
            f"</head><body>{''.join(parts)}</body></html>")
