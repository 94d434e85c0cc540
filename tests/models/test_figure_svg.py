"""The inline SVG of a figure keeps to a Content-Security-Policy without 'unsafe-inline': matplotlib's style
attributes and its one `<style>` rule become presentation attributes, and the drawing keeps its colours."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import numpy as np

from models import plots


def test_figure_svg_carries_no_inline_css_and_keeps_its_styles() -> None:
    figure = plots.waterfall_figure(-1.0, np.array([0.5, -0.25, 0.125]), ["a", "b", "c"], top_k=3)
    figure.axes[0].plot([0, 1], [0, 1], "--", color="#b3261e", alpha=0.5)
    svg = plots.figure_svg(figure, "w")
    assert "<style" not in svg and not re.search(r"\sstyle=", svg)
    root = ET.fromstring(svg.replace("xlink:href", "href"))  # a repeated attribute would not parse
    assert root.get("stroke-linejoin") == "round" and root.get("stroke-linecap") == "butt"
    dashed = [e for e in root.iter() if e.get("stroke") == "#b3261e"]
    assert dashed and dashed[0].get("stroke-dasharray") and dashed[0].get("stroke-opacity") == "0.5"
    labels = [e for e in root.iter() if e.text and e.text.strip() == "a"]
    assert labels and labels[0].get("font-size") and labels[0].get("text-anchor")
