"""The attribute × depth heat map: cells open the most-wrong faces; the static twin draws the
same."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from craftlib import viz
from craftlib.companions.attributes import study as S
from craftlib.companions.attributes import widgets as AW
from craftlib.companions.attributes.linear_probes import run_probes

from attribute_data import probe_record, toy_model, toy_probe_set


@pytest.fixture(scope="module")
def results():
    return run_probes(toy_model(), toy_probe_set(), n_boot=50)


def test_colours_span_chance_to_perfect():
    assert AW.cell_colour(0.5) != AW.cell_colour(1.0)
    assert AW.cell_colour(float("nan")) == "#dddddd"
    assert AW.text_colour(0.5) == "#ffffff" and AW.text_colour(0.99) == "#000000"


def test_cell_text(results):
    attr = results.attributes[0]
    text = AW.cell_text(results, attr, "stem")
    assert attr in text and "balanced accuracy" in text and "people the probe never saw" in text


def test_heatmap_and_static_twin(results):
    fig = AW.heatmap_figure(results)
    assert isinstance(fig, Figure)
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert len(labels) == results.balanced_accuracy.size
    assert not viz.small_text(fig, 72)
    attr, stage = results.attributes[1], "block2"
    twin = AW.probe_view(results, attr, stage)
    assert attr in twin.subfigs[1]._suptitle.get_text()
    framed = [p for p in twin.subfigs[0].axes[0].patches]
    assert len(framed) == 1 and framed[0].get_xy() == (results.stages.index(stage) - 0.5, 0.5)


def pixels(png: bytes):
    import io

    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)))


def gallery(html_text: str) -> list[tuple[np.ndarray, str]]:
    """The faces an HTML gallery shows (decoded pixels) and the name under each."""
    import base64
    import re

    found = re.findall(r"base64,([^']+)'.*?<figcaption>(.*?)</figcaption>", html_text)
    return [(pixels(base64.b64decode(data)), name) for data, name in found]


def test_explorer_click_selects_a_cell(results):
    ex = AW.ProbeExplorer(results, k=4)
    assert len(ex.buttons) == results.balanced_accuracy.size
    first = ex.faces.value
    attr, stage = results.attributes[1], "embedding"
    ex.buttons[(attr, stage)].click()
    assert ex.selected == (attr, stage)
    assert attr in ex.caption.value and ex.faces.value != first
    assert (
        ex.buttons[(attr, stage)].layout.border
        and not ex.buttons[AW.default_cell(results)].layout.border
    )
    # each cell shows exactly its most-wrong faces, in order, with their names and margins
    cells = [(a, s) for a in results.attributes for s in results.stages if (a, s) in results.probes]
    for cell in cells:
        ex.buttons[cell].click()
        wrong, shown = results.most_wrong(*cell, 4), gallery(ex.faces.value)
        assert len(shown) == len(wrong)
        if not wrong:
            assert "no wrong test face" in ex.faces.value
        for w, (face, name) in zip(wrong, shown):
            assert (face == results.probe_set.images[w["index"]]).all()
            assert name == AW.short_name(w["file"].split("/")[0].replace("_", " "))
            assert f"margin {abs(w['decision']):.1f}" in ex.faces.value
        assert ex.faces.value == AW.faces_html(results, *cell, 4)  # the cache changes nothing
    assert any(results.most_wrong(*cell, 4) for cell in cells)


def test_worst_faces_figure_shows_only_wrong(results):
    attr = results.attributes[1]
    fig = AW.worst_faces_figure(results, attr, "stem", k=5)
    wrong = results.most_wrong(attr, "stem", 5)
    assert len([a for a in fig.axes if a.images and a.get_visible()]) == len(wrong)


def test_labels_neither_wrap_nor_overlap(results):
    """The names under the faces stay apart, and each attribute label fits its column on one line (a
    wrapped one ran into the next row of buttons)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextPath

    fig = AW.worst_faces_figure(results, results.attributes[1], "stem", k=8)
    fig.canvas.draw()
    boxes = sorted(
        (a.texts[0].get_window_extent() for a in fig.axes if a.get_visible()),
        key=lambda b: b.x0,
    )
    assert all(left.x1 <= right.x0 for left, right in zip(boxes, boxes[1:])), (
        "names under the faces overlap"
    )
    assert (
        AW.short_name("Arnold Schwarzenegger") == "Arnold Schwa…"
        and AW.short_name("Tony Blair") == "Tony Blair"
    )
    widest = max(
        TextPath((0, 0), f"{a} ({k})", size=13, prop=FontProperties(family="DejaVu Sans"))
        .get_extents()
        .width
        for a, k in zip(results.attributes, results.kinds)
    )
    assert widest + 10 <= AW.LABEL_COLUMN_PX
    explorer = AW.ProbeExplorer(results, k=4)
    labels = [
        c.value for c in explorer.grid.children if "white-space:nowrap" in getattr(c, "value", "")
    ]
    assert len(labels) == len(results.attributes)


def test_depth_curves_figure():
    recs = [probe_record("none", s) for s in range(3)] + [
        probe_record("contextual", s, 0.01) for s in range(3)
    ]
    fig = AW.depth_curves_figure(S.depth_curves(recs))
    assert len(fig.axes) == 3 and len(fig.axes[0].lines) >= 2
