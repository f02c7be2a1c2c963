"""Counter-Trafficking Knowledge Exchange: the Streamlit entry point.

Run from the repository root with ``streamlit run app.py``.  This file only sets up the
page and the navigation; each page lives in ``app_pages/`` and every action goes through
``kb.service.Service``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:  # the page helpers live next to this file
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app_pages.common import APP_TITLE  # noqa: E402

st.set_page_config(page_title=APP_TITLE, layout="wide")

navigation = st.navigation(
    [
        st.Page(ROOT / "app_pages" / "ask.py", title="Ask", url_path="ask", default=True),
        st.Page(ROOT / "app_pages" / "map.py", title="Map", url_path="map"),
        st.Page(ROOT / "app_pages" / "brief.py", title="Brief", url_path="brief"),
        st.Page(ROOT / "app_pages" / "library.py", title="Library", url_path="library"),
    ]
)
navigation.run()
