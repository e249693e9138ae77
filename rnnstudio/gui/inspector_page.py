"""The perplexity inspector view: tokens coloured by probability, NLL and top-5 on hover, how perplexity adds up,
and two models side by side."""

from __future__ import annotations

import html
from bisect import bisect_right

from PySide6.QtCore import QEvent, QPoint, Qt, Signal
from PySide6.QtGui import QColor, QFont, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import (QComboBox, QHBoxLayout, QLabel, QPushButton, QSplitter, QTextBrowser, QTextEdit,
                               QToolTip)

from .model_choice import fill_combo
from .model_text_view import ModelTextView

PAGE_TOKENS = 5_000  # tokens drawn per page of a view; scoring always covers the whole text
NONE = "(none)"


def visible(token: str) -> str:
    """Newlines and tabs get a visible mark so their colour shows, inside longer tokens (BPE's) too."""
    return token.replace("\n", "↵\n").replace("\t", "→\t")


class TokenView(QTextEdit):
    """Read-only text of coloured tokens; hovering over a token shows its tooltip."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setReadOnly(True)
        self.setLineWrapMode(QTextEdit.WidgetWidth)
        font = QFont("monospace")
        font.setStyleHint(QFont.Monospace)
        font.setPointSize(11)
        self.setFont(font)
        self.starts: list[int] = []
        self.tips: list[str] = []

    def set_tokens(self, tokens: list[str], colours: list[tuple[int, int, int]], tips: list[str], *,
                   separator: str = "", lead: str = "") -> None:
        """Draw ``tokens`` with background ``colours``, each whole token in its colour whatever its length;
        ``lead`` is uncoloured text before them."""
        self.clear()
        self.starts, self.tips = [], list(tips)
        cursor = QTextCursor(self.document())
        cursor.beginEditBlock()
        plain = QTextCharFormat()
        if lead:
            cursor.insertText(lead, plain)
        fmt = QTextCharFormat()
        for token, (r, g, b) in zip(tokens, colours):
            self.starts.append(cursor.position())
            fmt.setBackground(QColor(r, g, b))
            cursor.insertText(visible(token), fmt)
            if separator:
                cursor.insertText(separator, plain)
        cursor.endEditBlock()
        self.moveCursor(QTextCursor.Start)

    def token_at(self, point: QPoint) -> int | None:
        """The index of the token under a viewport point, or None."""
        if not self.starts:
            return None
        cursor = self.cursorForPosition(point)
        pos = cursor.position()
        if point.x() < self.cursorRect(cursor).x() and pos > 0:
            pos -= 1  # the mouse is on the right half of the previous character
        i = bisect_right(self.starts, pos) - 1
        return i if 0 <= i < len(self.starts) else None

    def point_of(self, index: int) -> QPoint:
        """A viewport point in the middle of token ``index``'s first character (for tests and screenshots)."""
        c = QTextCursor(self.document())
        c.setPosition(self.starts[index])
        left = self.cursorRect(c)
        c.setPosition(self.starts[index] + 1)
        right = self.cursorRect(c)
        x = (left.x() + right.x()) // 2 if right.y() == left.y() else left.x() + 3
        return QPoint(x, left.center().y())

    def viewportEvent(self, event) -> bool:
        if event.type() == QEvent.ToolTip:
            i = self.token_at(event.pos())
            if i is not None and i < len(self.tips):
                QToolTip.showText(event.globalPos(), self.tips[i], self.viewport())
            else:
                QToolTip.hideText()
            return True
        return super().viewportEvent(event)


def probability_tip(row: dict) -> str:
    top = "".join(f"<tr><td><code>{html.escape(repr(t['token']))}</code></td><td align=right>{t['probability']:.4f}</td></tr>"
                  for t in row["top"])
    unk = " (unknown to the model: read as &lt;unk&gt;)" if row.get("unknown") else ""
    return (f"<b>{html.escape(repr(row['token']))}</b> at position {row['position']}{unk}<br>"
            f"p = {row['probability']:.4f} &nbsp; NLL = −ln p = {row['nll']:.4f} nats ({row['bits']:.3f} bits)<br>"
            f"rank {row['rank']} among the predictions<br><table>{top}</table>")


def breakdown_html(result: dict) -> str:
    """Mean NLL -> exp -> perplexity, bits per token beside it, and the worked example."""
    w = result["worked_example"]
    steps = "".join(f"<li>{html.escape(s)}</li>" for s in w["steps"])
    return (
        f"<p style='font-size:13pt'><b>{html.escape(result['model'])}</b>: "
        f"mean NLL = Σ NLL / N = {w['sum_nll']:.3f} / {w['count']} = <b>{w['mean_nll']:.4f}</b> nats "
        f"&nbsp;→&nbsp; exp → &nbsp;perplexity <b>{w['perplexity']:.4f}</b>"
        f" &nbsp;|&nbsp; bits per token = {w['mean_nll']:.4f} / ln 2 = <b>{w['bits_per_token']:.4f}</b>"
        f" &nbsp;|&nbsp; nats per character = {w['sum_nll']:.3f} / {result['chars']} = "
        f"<b>{result['nats-per-char']:.4f}</b> (comparable across tokenizers)</p>"
        f"<p>Perplexity is the number of equally likely choices that would be as surprising: each token is "
        f"coloured by the probability the model gave it (red: unlikely, green: likely). The first token only "
        f"starts the state. {result['unknown']} unknown token(s).</p>"
        f"<p><b>Worked on the first tokens</b></p><ol>{steps}</ol>"
    )


def compare_html(c: dict) -> str:
    wins = c["wins"]
    notes = "".join(f"<p style='color:#b35900'>{html.escape(n)}</p>" for n in c["notes"])
    big = ", ".join(f"{html.escape(repr(r['token']))} @{r['position']} ({'A' if r['winner'] == 'a' else 'B'} by "
                    f"{abs(r['diff']):.2f})" for r in c["biggest_differences"][:6])
    return (
        f"<p style='font-size:12pt'><b>A</b> {html.escape(c['model_a'])}: perplexity {c['perplexity_a']:.4f} "
        f"(mean NLL {c['mean_nll_a']:.4f}) &nbsp; vs &nbsp; <b>B</b> {html.escape(c['model_b'])}: perplexity "
        f"{c['perplexity_b']:.4f} (mean NLL {c['mean_nll_b']:.4f})</p>"
        f"<p>A wins {wins['a']} tokens, B wins {wins['b']} ({wins['tie']} ties). Bottom pane: green where A gave "
        f"the token more probability, purple where B did. Biggest differences: {big}</p>{notes}"
    )


def diff_colour(diff: float) -> tuple[int, int, int]:
    """NLL_B - NLL_A: green when A wins, purple when B wins; full colour at 2 nats."""
    t = max(-1.0, min(1.0, diff / 2.0))
    if t >= 0:
        return int(255 - 140 * t), int(255 - 45 * t), int(255 - 140 * t)
    t = -t
    return int(255 - 75 * t), int(255 - 140 * t), int(255 - 20 * t)


class InspectorView(ModelTextView):
    """Paste or open a text, pick a model (and optionally a second one), press Inspect."""

    explained = Signal(object)  # the explain() or compare() result now on screen

    def __init__(self, host=None, parent=None):
        super().__init__(host, input_height=110, parent=parent)
        self.result: dict | None = None

        self.model_a = QComboBox()
        self.model_b = QComboBox()
        self.model_a.setMinimumContentsLength(18)
        self.model_b.setMinimumContentsLength(18)
        self.inspect_button = QPushButton("Inspect", objectName="primary")
        self.inspect_button.clicked.connect(self.inspect)
        self.page = 0  # which PAGE_TOKENS tokens of the result are drawn
        self.prev_button = QPushButton("◀ Previous")
        self.next_button = QPushButton("Next ▶")
        self.prev_button.clicked.connect(lambda: self.show_page(self.page - 1))
        self.next_button.clicked.connect(lambda: self.show_page(self.page + 1))
        self.page_label = QLabel("")
        top = QHBoxLayout()
        top.addWidget(QLabel("Model A"))
        top.addWidget(self.model_a)
        top.addWidget(QLabel("compare with B"))
        top.addWidget(self.model_b)
        top.addWidget(self.open_button)
        top.addWidget(self.inspect_button)
        top.addStretch(1)
        top.addWidget(self.prev_button)
        top.addWidget(self.page_label)
        top.addWidget(self.next_button)
        self._update_paging()

        self.view_a = TokenView()
        self.view_b = TokenView()
        self.view_diff = TokenView()
        self.view_b.hide()
        self.view_diff.hide()
        self.breakdown = QTextBrowser()
        self.breakdown.setOpenLinks(False)
        self.view_a.setPlaceholderText("Pick a model and press Inspect: each token is coloured by how surprised "
                                       "the model was.")
        sides = QSplitter(Qt.Horizontal)
        sides.addWidget(self.view_a)
        sides.addWidget(self.view_b)
        panes = QSplitter(Qt.Vertical)
        panes.addWidget(sides)
        panes.addWidget(self.view_diff)
        panes.addWidget(self.breakdown)
        panes.setSizes([330, 160, 230])
        self.lay_out([top], panes)

    # -- models ---------------------------------------------------------------------
    def list_models(self, names: list[str]) -> None:
        fill_combo(self.model_a, names)
        fill_combo(self.model_b, [NONE, *names])
        self.inspect_button.setEnabled(bool(names))

    def select_models(self, a: str, b: str | None = None) -> None:
        self.model_a.setCurrentText(a)
        self.model_b.setCurrentText(b or NONE)

    # -- work -----------------------------------------------------------------------
    def inspect(self) -> bool:
        """Score the text under model A (and B) in a worker thread; False when there is nothing to do."""
        a = self.model_a.currentText()
        b = self.model_b.currentText()
        return self.start(self.inspect_button, a, f"inspecting with {a}…", a, None if b in ("", NONE) else b,
                          self.input.toPlainText())

    def compute(self, a: str, b: str | None, text: str) -> dict:
        from ..inspector import compare, explain

        if b is None:
            return {"kind": "explain", **explain(self.models.get(a), text, host=self.host)}
        return {"kind": "compare", **compare(self.models.get(a), self.models.get(b), text, host=self.host)}

    def show_done(self, result: dict) -> None:
        self.show_result(result)
        self.explained.emit(result)

    # -- display --------------------------------------------------------------------
    def pages(self) -> int:
        """How many pages of PAGE_TOKENS tokens the result on screen has (0 without a result)."""
        return -(-self.result["scored"] // PAGE_TOKENS) if self.result else 0

    def _update_paging(self) -> None:
        n = self.pages()
        self.prev_button.setEnabled(self.page > 0)
        self.next_button.setEnabled(self.page + 1 < n)
        for w in (self.prev_button, self.next_button, self.page_label):
            w.setVisible(n > 1)
        if n > 1:
            lo = self.page * PAGE_TOKENS
            hi = min(lo + PAGE_TOKENS, self.result["scored"])
            self.page_label.setText(f"tokens {lo + 1:,}–{hi:,} of {self.result['scored']:,}")

    def _window(self) -> slice:
        lo = self.page * PAGE_TOKENS
        return slice(lo, lo + PAGE_TOKENS)

    def _draw(self, view: TokenView, result: dict, title: str) -> None:
        rows = result["rows"][self._window()]  # only this page's rows are made (ExplainedRows)
        sep = result["separator"]
        from ..inspector import probability_colour

        first = f"{visible(result['first_token'])}{sep}" if self.page == 0 else ""
        view.set_tokens([r["token"] for r in rows], [probability_colour(r["probability"]) for r in rows],
                        [probability_tip(r) for r in rows], separator=sep, lead=f"{title}\n{first}")

    def show_page(self, page: int) -> None:
        """Draw page ``page`` (clamped) of the result on screen."""
        if not self.result:
            return
        self.page = max(0, min(page, self.pages() - 1))
        self._draw_result(self.result)
        self._update_paging()

    def show_result(self, result: dict) -> None:
        self.result = result
        self.page = 0
        self._draw_result(result)
        self._update_paging()
        if result["kind"] == "explain":
            self.breakdown.setHtml(breakdown_html(result))
            self.status.emit(f"{result['model']}: perplexity {result['perplexity']:.3f} over {result['scored']} tokens, "
                             f"{result['nats-per-char']:.3f} nats per character")
            return
        ea, eb = result["explain_a"], result["explain_b"]
        self.breakdown.setHtml(compare_html(result) + breakdown_html(ea) + breakdown_html(eb))
        self.status.emit(f"A wins {result['wins']['a']} tokens, B wins {result['wins']['b']}")

    def _draw_result(self, result: dict) -> None:
        if result["kind"] == "explain":
            self._draw(self.view_a, result, f"{result['model']}: perplexity {result['perplexity']:.3f}")
            self.view_b.hide()
            self.view_diff.hide()
            return
        ea, eb = result["explain_a"], result["explain_b"]
        self._draw(self.view_a, ea, f"A {ea['model']}: perplexity {ea['perplexity']:.3f}")
        self._draw(self.view_b, eb, f"B {eb['model']}: perplexity {eb['perplexity']:.3f}")
        rows = result["rows"][self._window()]
        sep = ea["separator"]
        tips = [f"<b>{html.escape(repr(r['token']))}</b> at {r['position']}<br>NLL A {r['nll_a']:.4f}, "
                f"B {r['nll_b']:.4f}<br>B − A = {r['diff']:+.4f}: "
                f"<b>{ {'a': 'A wins', 'b': 'B wins', 'tie': 'tie'}[r['winner']]}</b>" for r in rows]
        first = f"{visible(ea['first_token'])}{sep}" if self.page == 0 else ""
        self.view_diff.set_tokens([r["token"] for r in rows], [diff_colour(r["diff"]) for r in rows], tips,
                                  separator=sep, lead=f"who wins where (green: A, purple: B)\n{first}")
        self.view_b.show()
        self.view_diff.show()
        for view in (self.view_a, self.view_b, self.view_diff):
            view.verticalScrollBar().setValue(0)


def page(window):
    """The main window's tab (see ``pages.py``): refreshed whenever models change or a training run ends."""
    from .pages import attach_view

    return attach_view(window, InspectorView(window.host), "refresh_models")


SCREENSHOT_TEXT = ('Return the number of items in a container. "len(s)" counts the characters of a string;\n'
                   'for example, len("spam") == 4 and the list [1, 2, 3] has three items.\n')


def screenshot(window) -> None:
    """For ``screenshots.py``: the demo model's per-token view of a docs-like sentence."""
    from .screenshots import DEMO_MODEL, run_to_end, settle, show_tab

    view = show_tab(window, InspectorView)
    view.refresh_models()
    view.set_text(SCREENSHOT_TEXT)
    view.select_models(DEMO_MODEL)
    run_to_end(view, view.inspect, 120, "the inspector")
    if view.result is None or not view.view_a.starts:
        raise RuntimeError("the inspector shows no tokens")
    settle()


def screenshot_compare(window) -> None:
    """For ``screenshots.py`` (after the runs shot): the demo GRU against the demo LSTM on the same text."""
    from .screenshots import DEMO_MODEL, run_to_end, settle, show_tab

    view = show_tab(window, InspectorView)
    view.refresh_models()
    view.set_text(SCREENSHOT_TEXT)
    view.select_models(DEMO_MODEL, f"{DEMO_MODEL}-lstm")
    run_to_end(view, view.inspect, 120, "the comparison")
    if view.result is None or view.result["kind"] != "compare":
        raise RuntimeError("the inspector shows no comparison")
    settle()
