"""The federated rounds explorer (craftlib.companions.federated.widgets) and its static twin, on toy
federated runs."""

from __future__ import annotations

import pytest

from craftlib.companions.federated import federation as F
from craftlib.companions.federated import widgets as FW
from craftlib.reactivation import CraftSpec
from craftlib.recipes import Recipe


@pytest.fixture(scope="module")
def toy_runs(toy_faces, toy_config):
    recipe = Recipe("toy", toy_config.but(batch_size=32), CraftSpec(tau=0.9, last_epoch=2))
    n = 3
    pool = F.subset(toy_faces, range(n))
    parts = F.partition(n, 2, "iid")
    fedn = F.Federation([F.subset(pool, p) for p in parts], F.subset(toy_faces, [3]), None, pool)
    runs = {}
    for name, strategy, craft in (
        ("fedavg+server", "fedavg", "server"),
        ("local", "local", "none"),
    ):
        runs[name] = F.run(
            recipe, F.FedConfig(strategy=strategy, craft=craft, clients=2, rounds=3), fedn
        )
    for rec in runs.values():  # no DevTest here: give the global curve numbers to draw
        for i, row in enumerate(rec["rounds"]):
            row["global"] = {"accuracy": 0.5 + 0.05 * i}
            for c in row["clients"]:
                c.setdefault("accuracy", 0.55)
    return runs


def test_round_state(toy_runs):
    state = FW.round_state(toy_runs["fedavg+server"], 2)
    assert state["round"] == 2 and state["rounds"] == 3 and len(state["client_silent"]) == 2
    assert state["global_accuracy"] == [0.5, 0.55, 0.6]
    assert state["server_renewed"] == len(toy_runs["fedavg+server"]["rounds"][1]["server_renewed"])
    with pytest.raises(ValueError, match="round must be"):
        FW.round_state(toy_runs["local"], 4)
    assert "CRAFT on the server" in FW.run_label(toy_runs["fedavg+server"])


def test_static_twin_draws_three_panels(toy_runs):
    fig = FW.rounds_view(toy_runs, "fedavg+server", 1)
    assert len(fig.axes) == 3
    assert "round 1/3" in fig._suptitle.get_text()


def test_the_legend_names_only_what_the_curves_panel_draws(toy_runs):
    """A run verified at the last round only (local only with ``evaluate_clients=False``) is drawn
    as one marked point and says so; a run never verified is left out of the legend."""
    import copy

    import numpy as np

    runs = copy.deepcopy(toy_runs)
    runs["last round only"] = copy.deepcopy(runs["local"])
    for row in runs["last round only"]["rounds"][:-1]:
        row["global"] = None
    runs["never verified"] = copy.deepcopy(runs["local"])
    for row in runs["never verified"]["rounds"]:
        row["global"] = None
    ax = FW.rounds_view(runs, "fedavg+server", 3).axes[0]
    drawn = {line.get_label(): line for line in ax.lines if not line.get_label().startswith("_")}
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["fedavg+server", "local", "last round only (round 3 only)"]
    assert set(legend) <= set(drawn)
    point = drawn["last round only (round 3 only)"]
    assert point.get_linestyle() == "None" and point.get_marker() not in (None, "None", "")
    assert np.isfinite(point.get_ydata()).sum() == 1


@pytest.mark.slow  # draws the figure three times
def test_explorer_slider_and_menu(toy_runs):
    ex = FW.RoundsExplorer(toy_runs)
    assert ex.slider.max == 3 and ex.slider.value == 3 and ex.image.value[:4] == b"\x89PNG"
    ex.slider.value = 1
    assert "round 1/3" in ex.caption.value
    ex.menu.value = "local"
    assert "local only" in ex.caption.value
    with pytest.raises(ValueError):
        FW.RoundsExplorer({})


@pytest.mark.slow
def test_a_rounds_fast_redraw_is_the_full_one(toy_runs):
    """A new round redraws only its bars, marks and titles over the kept rest of the run's figure:
    the page must show what a full redraw of the same round shows."""
    import io

    import numpy as np
    from PIL import Image

    pixels = lambda png: np.asarray(Image.open(io.BytesIO(png)))  # noqa: E731
    ex = FW.RoundsExplorer(toy_runs, run="fedavg+server")
    fig, redrawer, _ = ex._figures["fedavg+server"]
    seen = {3: ex.image.value}
    for round_ in (2, 1):  # first visits: drawn over the kept rest
        ex.slider.value = round_
        seen[round_] = ex.image.value
        assert f"round {round_}/3" in fig._suptitle.get_text()
        assert (pixels(seen[round_]) == pixels(redrawer.png(full=True))).all()
    ex.slider.value = 3  # a revisit: what was shown
    assert ex.image.value == seen[3] and len(ex._figures) == 1
