"""Map: what each organisation has learned about each theme, as a heat map.

Rows are the themes of the taxonomy, columns the organisations of the library, and each
cell counts the lessons, recommendations and good practices tagged with that theme.
Choosing a cell (a click in the table, or the two pickers under it) lists its passages
with their citations and "Add to brief"; one button builds a whole theme brief.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app_pages import common
from app_pages.common import md
from kb.brief import BriefError
from kb.exchange_map import MAP_TYPES
from kb.themes import PASSAGE_TYPE_LABELS, PASSAGE_TYPES

ALL_ORGANISATIONS = "All organisations"
_TABLE = "map_table"
_THEME = "map_theme"
_ORGANISATION = "map_organisation"
_LAST_CELL = "map_last_cell"
_BUILT = "map_built_brief"
_SHOWN = "map_shown"
_SHOWN_CELL = "map_shown_cell"
#: Passages listed at a time under the map.
PAGE_SIZE = 25

# The heat map's scale: white (nothing) to deep teal (the fullest cell).
_EMPTY_CELL = "background-color: #f3f4f6; color: #9ca3af"
_LIGHT = (236, 248, 246)
_DARK = (15, 118, 110)


# --------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------


def map_frame(table: dict) -> pd.DataFrame:
    """The map as a data frame: one row per theme (its label), the row total under
    ``ALL_ORGANISATIONS`` first, then one column per organisation."""
    organisations = table["organisations"]
    rows = {
        entry["label"]: [entry["total"]] + [entry["organisations"][org] for org in organisations]
        for entry in table["themes"].values()
    }
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=[ALL_ORGANISATIONS, *organisations])
    frame.index.name = "Theme"
    return frame


def cell_colour(count: int, fullest: int) -> str:
    """CSS for one cell: the more passages, the darker; empty cells are grey, so the
    gaps of the library stand out."""
    if count <= 0 or fullest <= 0:
        return _EMPTY_CELL
    share = min(1.0, count / fullest) ** 0.6  # lift small counts off white
    red, green, blue = (round(light + (dark - light) * share) for light, dark in zip(_LIGHT, _DARK))
    text = "#ffffff" if share > 0.55 else "#0f172a"
    return f"background-color: rgb({red}, {green}, {blue}); color: {text}"


def heat_map(frame: pd.DataFrame):
    """The frame styled as a heat map (organisation columns share one scale; the total
    column has its own)."""
    organisations = [c for c in frame.columns if c != ALL_ORGANISATIONS]
    fullest = int(frame[organisations].to_numpy().max()) if organisations and len(frame) else 0
    fullest_total = int(frame[ALL_ORGANISATIONS].max()) if len(frame) else 0

    def colours(column: pd.Series) -> list[str]:
        top = fullest_total if column.name == ALL_ORGANISATIONS else fullest
        return [cell_colour(int(value), top) for value in column]

    return frame.style.apply(colours, axis=0)


def _chosen_cell(event, frame: pd.DataFrame) -> None:
    """A cell clicked in the table becomes the pickers' choice (before they are drawn)."""
    cells = list(getattr(getattr(event, "selection", None), "cells", None) or [])
    cell = tuple(cells[0]) if cells else None
    if cell == st.session_state.get(_LAST_CELL):
        return
    st.session_state[_LAST_CELL] = cell
    if cell is None:
        return
    row, column = cell
    if 0 <= int(row) < len(frame) and column in frame.columns:
        st.session_state[_THEME] = frame.index[int(row)]
        st.session_state[_ORGANISATION] = column


# --------------------------------------------------------------------------------------
# Actions
# --------------------------------------------------------------------------------------


def _add_all_to_brief(citations) -> None:
    store = common.brief_store()
    brief_id = common.ensure_brief(store)
    for citation in citations:
        store.add_passage(brief_id, citation)
    st.toast(f"{len(citations)} passages added to the brief {md(store.get(brief_id).title)}")


def _build_theme_brief(service, theme_id: str) -> None:
    try:
        brief = service.save_theme_brief(theme_id)
    except (KeyError, BriefError, OSError) as error:  # the theme was retagged away; the disk refused
        st.session_state[_BUILT] = ("error", f"The theme brief could not be made: {error}")
        return
    common.set_current_brief(brief.id)
    st.session_state[_BUILT] = ("saved", brief.title)


# --------------------------------------------------------------------------------------
# Page
# --------------------------------------------------------------------------------------


def main() -> None:
    service = common.service()
    st.title("Map of lessons learned")
    st.caption(
        "How many passages of each kind the library holds per theme and organisation. "
        "Choose a cell to read its passages; grey cells are gaps in the library."
    )
    types = st.multiselect(
        "Count these passages",
        list(PASSAGE_TYPES),
        default=list(MAP_TYPES),
        key="map_types",
        format_func=lambda kind: PASSAGE_TYPE_LABELS.get(kind, kind),
    ) or list(MAP_TYPES)
    table = service.exchange_map(tuple(types))
    if not table["organisations"]:
        st.info("The library is empty. Staff can add reports on the Library page.")
        return
    labels = {entry["label"]: theme_id for theme_id, entry in table["themes"].items()}
    frame = map_frame(table)
    event = st.dataframe(
        heat_map(frame),
        key=_TABLE,
        on_select="rerun",
        selection_mode="single-cell",
        width="stretch",
        height=min(38 + 35 * len(frame), 640),
    )
    _chosen_cell(event, frame)

    theme_column, organisation_column = st.columns(2)
    with theme_column:
        if st.session_state.get(_THEME) not in labels:
            st.session_state.pop(_THEME, None)
        theme_label = st.selectbox("Theme", list(labels), key=_THEME, index=None, placeholder="Choose a theme")
    with organisation_column:
        choices = [*table["organisations"], ALL_ORGANISATIONS]
        if st.session_state.get(_ORGANISATION) not in choices:
            st.session_state[_ORGANISATION] = ALL_ORGANISATIONS
        organisation = st.selectbox("Organisation", choices, key=_ORGANISATION)
    if theme_label is None:
        st.caption("Choose a cell in the table, or a theme above, to see its passages.")
        return
    theme_id = labels[theme_label]
    show_theme(service, theme_id, theme_label, organisation, tuple(types))


def show_theme(service, theme_id: str, theme_label: str, organisation: str, types: tuple[str, ...]) -> None:
    """The chosen cell's passages, and the theme brief button."""
    st.button(
        f"Build a theme brief: {theme_label}",
        key="build-theme-brief",
        on_click=_build_theme_brief,
        args=(service, theme_id),
        help="Each organisation's lessons and recommendations on this theme, quoted and cited, as a new brief.",
        type="primary",
    )
    outcome, text = st.session_state.pop(_BUILT, (None, ""))
    if outcome == "saved":
        st.success(f"Theme brief saved: {md(text)}. Open it on the Brief page to edit and export it.")
        st.page_link("app_pages/brief.py", label="Open the Brief page")
    elif outcome == "error":
        st.error(md(text))

    whose = None if organisation == ALL_ORGANISATIONS else organisation
    citations = service.map_passages(theme_id, whose, types)
    kinds = ", ".join(PASSAGE_TYPE_LABELS.get(t, t).lower() for t in types)
    st.subheader(md(f"{theme_label} - {organisation}"))
    if not citations:
        st.info(f"The library holds no passages of these kinds ({md(kinds)}) on this theme from {md(organisation)}.")
        return
    st.caption(f"{len(citations)} passage{'s' if len(citations) != 1 else ''} ({md(kinds)}).")
    st.button(
        f"Add all {len(citations)} passages to brief",
        key="map-add-all",
        on_click=_add_all_to_brief,
        args=(citations,),
    )
    cell = (theme_id, organisation, types)
    if st.session_state.get(_SHOWN_CELL) != cell:  # a new cell starts at the first page
        st.session_state[_SHOWN_CELL] = cell
        st.session_state[_SHOWN] = PAGE_SIZE
    shown = st.session_state.get(_SHOWN, PAGE_SIZE)
    for citation in citations[:shown]:
        common.render_citation(service, citation, f"map-{citation.chunk_id}")
    if len(citations) > shown:
        st.button(
            f"Show {min(PAGE_SIZE, len(citations) - shown)} more of {len(citations) - shown}",
            key="map-more",
            on_click=_show_more,
        )


def _show_more() -> None:
    st.session_state[_SHOWN] = st.session_state.get(_SHOWN, PAGE_SIZE) + PAGE_SIZE


main()
