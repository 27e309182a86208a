"""A live, sortable, filterable table (Textual's line API), and the filter bar that drives it.

DataTable re-renders every visible cell after any change and measures every new cell through
Rich; a refresh of 1,000 rows cost most of the 100 ms budget. This table renders each row to
one Strip, cached by what the row shows, so a refresh rebuilds only the rows that changed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Input

Cell = str | Text
Item = dict[str, Any]
MAX_WIDTH = 60  # a column never grows wider (long error messages are cut with …)


@dataclass(frozen=True)
class Col:
    """One column: its label, how an item is shown, and (optionally) what it sorts by."""

    key: str
    label: str
    cell: Callable[[Item], Cell]
    sort: Callable[[Item], Any] | None = None
    right: bool = False  # right-aligned (numbers)


class _Row(NamedTuple):
    key: Any
    item: Item
    cells: tuple[tuple[str, str], ...]  # (text, style) per column
    text: str  # every cell's text, lower case, for the filter


def _cell(cell: Cell) -> tuple[str, str]:
    if isinstance(cell, Text):
        return cell.plain, str(cell.style) if cell.style else ""
    return cell, ""


class LiveTable(ScrollView, can_focus=True):
    """A table fed whole item lists on every refresh; the header stays on top.

    The cursor follows the selected item when the order changes. Keys: arrows, page keys,
    home/end (g/G), enter, s (next sort column), S (reverse); a click on a header sorts, a
    double click (or enter) opens the item.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home,g", "first_row", "First", show=False),
        Binding("end,G", "last_row", "Last", show=False),
        Binding("enter", "select", "Open", show=False),
        Binding("s", "cycle_sort", "Sort"),
        Binding("S", "reverse_sort", "Reverse", show=False),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "live-table--header", "live-table--cursor", "live-table--odd-row",
    }
    DEFAULT_CSS = """
    LiveTable {
        height: 1fr;
        background: $surface;
    }
    LiveTable > .live-table--header {
        text-style: bold;
        background: $panel;
    }
    LiveTable > .live-table--odd-row {
        background: $surface-lighten-1;
    }
    LiveTable > .live-table--cursor {
        background: $block-cursor-blurred-background;
        color: $block-cursor-blurred-foreground;
    }
    LiveTable:focus > .live-table--cursor {
        background: $block-cursor-background;
        color: $block-cursor-foreground;
        text-style: bold;
    }
    """

    class Selected(Message):
        """Enter (or a double click) on an item."""

        def __init__(self, table: LiveTable, item: Item) -> None:
            super().__init__()
            self.table = table
            self.item = item

    def __init__(self, columns: Sequence[Col], *, item_key: Callable[[Item], Any],
                 sort_by: int = 0, reverse: bool = False, pure: bool = False,
                 id: str | None = None) -> None:
        """`pure`: the cells depend on the item alone (not on the clock), so an item equal to
        the one shown before keeps its rendered cells."""
        super().__init__(id=id)
        self.cols = list(columns)
        self.item_key = item_key
        self.sort_by = sort_by
        self.reverse = reverse
        self.pure = pure
        self.filter_text = ""
        self.cursor_row = 0
        self._items: list[Item] = []
        self._rows: list[_Row] = []
        self._cache: dict[Any, _Row] = {}
        self._widths: tuple[int, ...] = tuple(cell_len(c.label) + 2 for c in self.cols)
        self._strips: dict[Any, Strip] = {}
        self._styles: dict[str, Style] = {}

    # -- what the screens call -----------------------------------------------------------
    def show(self, items: list[Item]) -> None:
        """Show these items (the latest data), filtered and sorted as the user chose."""
        self._items = items
        self._render_rows()

    def set_filter(self, text: str, *, render: bool = True) -> None:
        self.filter_text = text.strip().lower()
        if render:
            self._render_rows()

    @property
    def items(self) -> list[Item]:
        """The items shown, in display order."""
        return [r.item for r in self._rows]

    @property
    def row_count(self) -> int:
        return len(self._rows)

    @property
    def selected(self) -> Item | None:
        """The item under the cursor, or None when the table is empty."""
        return self._rows[self.cursor_row].item if 0 <= self.cursor_row < len(self._rows) else None

    def select_key(self, key: Any) -> None:
        """Put the cursor on the item with this key, if shown."""
        for i, row in enumerate(self._rows):
            if row.key == key:
                self.move_cursor(i)
                return

    def move_cursor(self, row: int) -> None:
        self.cursor_row = max(0, min(row, len(self._rows) - 1))
        visible = max(self.scrollable_content_region.height - 1, 1)
        top = int(self.scroll_y)
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False)
        elif self.cursor_row >= top + visible:
            self.scroll_to(y=self.cursor_row - visible + 1, animate=False)
        self.refresh()

    def column_at(self, x: int) -> int | None:
        """The column under content x (scroll included), or None past the last one."""
        edge = 0
        for index, width in enumerate(self._widths):
            edge += width
            if x < edge:
                return index
        return None

    # -- keys and mouse ------------------------------------------------------------------
    def action_cursor(self, step: int) -> None:
        self.move_cursor(self.cursor_row + step)

    def action_page(self, direction: int) -> None:
        self.move_cursor(self.cursor_row + direction * max(self.size.height - 2, 1))

    def action_first_row(self) -> None:
        self.move_cursor(0)

    def action_last_row(self) -> None:
        self.move_cursor(len(self._rows) - 1)

    def action_select(self) -> None:
        item = self.selected
        if item is not None:
            self.post_message(self.Selected(self, item))

    def action_cycle_sort(self) -> None:
        self.sort_by = (self.sort_by + 1) % len(self.cols)
        self.reverse = False
        self._render_rows()

    def action_reverse_sort(self) -> None:
        self.reverse = not self.reverse
        self._render_rows()

    def sort_on(self, index: int) -> None:
        """Sort by a column; the same column again reverses the order."""
        self.reverse = (not self.reverse) if index == self.sort_by else False
        self.sort_by = index
        self._render_rows()

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        if offset.y == 0:
            index = self.column_at(offset.x + int(self.scroll_x))
            if index is not None:
                self.sort_on(index)
            return
        row = int(self.scroll_y) + offset.y - 1
        if 0 <= row < len(self._rows):
            self.move_cursor(row)
            if event.chain >= 2:
                self.action_select()

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()

    # -- rows ----------------------------------------------------------------------------
    def _row(self, item: Item) -> _Row:
        key = self.item_key(item)
        if self.pure:
            cached = self._cache.get(key)
            if cached is not None and cached.item == item:
                return cached
        cells = tuple(_cell(c.cell(item)) for c in self.cols)
        row = _Row(key, item, cells, " ".join(text for text, _ in cells).lower())
        if self.pure:
            self._cache[key] = row
        return row

    def _render_rows(self) -> None:
        selected = self._rows[self.cursor_row].key if 0 <= self.cursor_row < len(self._rows) else None
        rows = [self._row(item) for item in self._items]
        if self.pure and len(self._cache) > 2 * len(rows) + 100:
            self._cache = {r.key: r for r in rows}
        if self.filter_text:
            rows = [r for r in rows if self.filter_text in r.text]
        col = self.cols[self.sort_by] if self.cols else None
        if col is not None and col.sort is not None:
            # Items without a value (a worker with no health check yet) go last either way.
            sort = col.sort
            missing = [r for r in rows if sort(r.item) is None]
            rows = [r for r in rows if sort(r.item) is not None]
            rows.sort(key=lambda r: sort(r.item), reverse=self.reverse)
            rows += missing
        elif col is not None:
            index = self.sort_by
            rows.sort(key=lambda r: r.cells[index][0].lower(), reverse=self.reverse)
        self._rows = rows
        widths = [cell_len(c.label) + (4 if j == self.sort_by else 2)  # the sort mark: " ▲"
                  for j, c in enumerate(self.cols)]
        for row in rows:
            for j, (text, _) in enumerate(row.cells):
                if len(text) + 2 > widths[j]:
                    widths[j] = min(cell_len(text) + 2, MAX_WIDTH)
        if tuple(widths) != self._widths:
            self._widths = tuple(widths)
            self._strips.clear()
        if len(self._strips) > 4 * len(rows) + 200:
            self._strips.clear()
        self.virtual_size = Size(sum(self._widths), len(rows) + 1)
        keys = [r.key for r in rows]
        self.cursor_row = keys.index(selected) if selected in keys else min(
            self.cursor_row, max(len(rows) - 1, 0))
        self.refresh()

    # -- rendering -----------------------------------------------------------------------
    def _style(self, spec: str) -> Style:
        style = self._styles.get(spec)
        if style is None:
            style = self._styles[spec] = Style.parse(spec) if spec else Style()
        return style

    def _segments(self, cells: Sequence[tuple[str, str]], base: Style, top: Style | None,
                  header: bool = False) -> list[Segment]:
        segments = []
        for j, (text, spec) in enumerate(cells):
            width = self._widths[j] - 2
            if cell_len(text) > width:
                text = set_cell_size(text, width - 1) + "…"
            else:
                pad = " " * (width - cell_len(text))
                text = pad + text if self.cols[j].right else text + pad
            style = base + self._style(spec) if not header else base
            if top is not None:
                style += top
            segments.append(Segment(f" {text} ", style))
        return segments

    def _header(self) -> Strip:
        cells = []
        for index, col in enumerate(self.cols):
            mark = (" ▼" if self.reverse else " ▲") if index == self.sort_by else ""
            cells.append((col.label + mark, ""))
        style = self.rich_style + self.get_component_rich_style("live-table--header")
        return Strip(self._segments(cells, style, None, header=True), sum(self._widths))

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        base = self.rich_style
        if y == 0:
            return self._header().crop_extend(scroll_x, scroll_x + width, base)
        index = scroll_y + y - 1
        if index >= len(self._rows):
            return Strip.blank(width, base)
        row = self._rows[index]
        cursor = index == self.cursor_row
        odd = index % 2 == 1
        key = (row.key, row.cells, cursor, odd, self.has_focus)
        strip = self._strips.get(key)
        if strip is None:
            row_style = base + self.get_component_rich_style("live-table--odd-row") if odd else base
            top = self.get_component_rich_style("live-table--cursor") if cursor else None
            strip = Strip(self._segments(row.cells, row_style, top), sum(self._widths))
            self._strips[key] = strip
        return strip.crop_extend(scroll_x, scroll_x + width, base)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._strips.clear()


class FilterBar(Input):
    """The `/` filter: typing narrows the table at once; enter keeps it, escape clears it."""

    BINDINGS = [Binding("escape", "dismiss_filter", "Clear filter")]

    class Done(Message):
        """The user left the filter bar (`cleared`: with escape)."""

        def __init__(self, cleared: bool) -> None:
            super().__init__()
            self.cleared = cleared

    def action_dismiss_filter(self) -> None:
        self.value = ""
        self.post_message(self.Done(cleared=True))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.post_message(self.Done(cleared=False))
