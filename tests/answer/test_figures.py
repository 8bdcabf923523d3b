"""The figures: draw() finds a figure through the phase that declares it, hands it that phase,
saves PNG and SVG, and needs no display (the figures from a smoke run are checked by
test_workflow.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd
import pytest

from imgread.answer.figures.common import subplots
from imgread.answer.figures.draw import draw
from imgread.errors import UserError
from imgread.phases.base import Phase
from imgread.phases.registry import FIGURES, PHASES, load_object

SEEN: dict = {}
TABLES = dict(
    trials=pd.DataFrame({"phase": ["other"]}),
    summary=pd.DataFrame(),
    speed=pd.DataFrame(),
    published=pd.DataFrame(),
    settings={"dpi": 40},
)


def bare_figure(trials, summary, speed, published, settings, phase, **extra):
    SEEN.update(phase=phase, extra=extra)
    fig, ax = subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1])
    return fig


def pyplot_figure(trials, summary, speed, published, settings, phase, **_):
    fig, ax = plt.subplots(figsize=(2, 2))  # as a plug-in may draw it
    ax.plot([0, 1], [1, 0])
    return fig


class FigurePhase(Phase):
    name = "figphase"
    figures = {
        "fig_bare": f"{__name__}:bare_figure",
        "fig_pyplot": f"{__name__}:pyplot_figure",
    }


@pytest.fixture
def fig_phase(monkeypatch):
    phase = FigurePhase()
    for name in phase.figures:
        monkeypatch.setitem(FIGURES, name, phase)
    return phase


def test_every_registered_figure_is_a_function_of_its_phase():
    assert FIGURES, "no phase declares a figure"
    for name, phase in FIGURES.items():
        assert phase is PHASES[phase.name]
        assert callable(load_object(phase.figures[name])), name


def test_draw_calls_the_owning_phase_figure_and_saves_png_and_svg(fig_phase, tmp_path):
    out = draw("fig_bare", out_stem=tmp_path / "a" / "fig_bare", device={"x": 1}, **TABLES)
    assert [p.name for p in out] == ["fig_bare.png", "fig_bare.svg"]
    assert all(p.stat().st_size > 1000 for p in out)
    assert SEEN["phase"] is fig_phase
    assert set(SEEN["extra"]) == {"caches", "frames", "scaling", "device"}
    assert SEEN["extra"]["device"] == {"x": 1}


def test_a_pyplot_figure_is_saved_and_closed(fig_phase, tmp_path):
    before = plt.get_fignums()
    out = draw("fig_pyplot", out_stem=tmp_path / "fig_pyplot", **TABLES)
    assert all(p.exists() for p in out)
    assert plt.get_fignums() == before


def test_an_unknown_figure_names_the_known_ones(tmp_path):
    with pytest.raises(UserError, match="unknown figure 'nope'.*" + next(iter(FIGURES))):
        draw("nope", out_stem=tmp_path / "nope", **TABLES)


def test_a_phase_without_rows_draws_a_figure_that_says_so(tmp_path):
    # every built-in figure of a phase that ran nothing says so instead of failing
    names = [n for n, ph in FIGURES.items() if ph.name in ("dataloader", "stream")]
    trials = pd.DataFrame({"phase": ["other"], "fps": [0], "compute_ms": [0]})
    assert len(names) >= 6
    for name in names:
        with matplotlib.rc_context({"svg.fonttype": "none"}):  # text kept as text in the SVG
            out = draw(name, out_stem=tmp_path / name, **{**TABLES, "trials": trials})
        svg = next(p for p in out if p.suffix == ".svg").read_text()
        said = " ".join(re.findall(r"<text[^>]*>([^<]*)</text>", svg)).lower()
        # one line that says there is nothing, and of what: "no stream trials in this study"
        assert re.match(r"no \b.*\b(trials|shards)\b", said.strip()), (name, said)
        assert '<g id="xtick' not in svg, f"{name}: axes drawn for a phase with no rows"


def test_figures_need_no_display_and_choose_no_backend(tmp_path):
    code = textwrap.dedent(
        f"""
        import matplotlib, pandas as pd
        from imgread.answer.figures.draw import draw
        from imgread.phases.registry import FIGURES
        name = next(n for n, ph in FIGURES.items() if ph.name == "dataloader")
        draw(name, pd.DataFrame({{"phase": ["other"]}}), None, None, None,
             out_stem={str(tmp_path / "x")!r}, settings={{"dpi": 40}})
        print(matplotlib.rcParams._get_backend_or_none())
        """
    )
    hidden = ("DISPLAY", "WAYLAND_DISPLAY", "MPLBACKEND")
    env = {k: v for k, v in os.environ.items() if k not in hidden}
    run = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "None"  # no backend was ever resolved
    assert (tmp_path / "x.png").stat().st_size > 1000
