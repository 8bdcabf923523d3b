"""The report's first page: the answer table is whole, starts at the top of the page, and
nothing is drawn over it, at 1400 and 1920 px wide.

Snakemake's report template puts the workflow description (workflow/report/workflow.rst,
filled from the records by imgread.answer.study) in a 32rem column beside the rule graph, both
centred in a screen-high box. The answer table is wider than that column: without the page's
own style (at the top of workflow.rst) the rule graph was drawn over its rate, speedup and
ceiling columns, and the top of the page could not be scrolled to.

The report here is built from a tiny workflow, not from a study run (a few seconds): the real
first-page template filled from a synthetic study and answer, and a rule graph with the real
workflow's rules. Where Chromium is installed the page is laid out in it and measured;
otherwise those tests are skipped, and the checks of the built HTML still run.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import tempfile
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml

from imgread.answer.study import write_captions
from imgread.phases.registry import FIGURES

from ..support.helpers import ROOT, snakemake

pytestmark = pytest.mark.workflow

WIDTHS = (1400, 1920)
CHROMIUM = next(
    (c for c in ("chromium", "chromium-browser", "google-chrome") if shutil.which(c)), None
)

STUDY = {
    "dataset": {
        "name": "synthetic-4mb",
        "kind": "generated",
        "count": 900,
        "width": 4032,
        "height": 3024,
        "mean_mb": 4.0,
    },
    "trials": 2195,
    "phases": ["dataloader", "decode", "load", "stream"],
    "sizes": {"dataloader": [640], "decode": [50, 100, 900], "load": [50, 900], "stream": [240]},
    "repetitions": {"min": 3, "max": 10},
    "machines": [
        {
            "hostname": "vm",
            "cpu_model": "Intel(R) Xeon(R) Processor",
            "logical_cores": 2,
            "physical_cores": 2,
        }
    ],
    "started": "2026-01-01T00:00:00+00:00",
    "finished": "2026-01-01T09:40:00+00:00",
    "device": {
        "method": "fio",
        "fio_version": "fio-3.33",
        "device_mb_per_s": 830.0,
        "best_jobs": 4,
    },
    "cold_cache": {
        "trials": 600,
        "methods": ["fadvise"],
        "max_resident_fraction": 0.01,
        "worst_resident_fraction": 0.0,
    },
    "interfered_trials": 3,
}

# The answer's widest kinds of row (one per job of each phase), as aggregate writes them.
ANSWER = """
phase|job|n_images|also_for_n|variant|workers|settings|unit|median|ceiling_kind|ceiling_fraction
load|-|900|50|threads|8|-|MB/s|812.4|device|0.98
decode|output=full, delivery=discard|900|-|processes|2|decoder=pillow|megapixels/s|141.2|cpu|0.97
decode|output=crop224, delivery=pixels|100|-|processes-shm|2|decoder=simplejpeg|megapixels/s|771.9|cpu|0.93
decode|output=full, delivery=pixels|100|-|threads|2|decoder=simplejpeg|megapixels/s|528.3|cpu|0.9
dataloader|batch_size=32, page_cache=cold|640|-|torch|2|decoder=simplejpeg, source=cache-npy, pin_memory=false|images/s|691.3|cpu|1.0
dataloader|batch_size=32, page_cache=warm|640|-|torch|2|decoder=simplejpeg, source=cache-pickle, pin_memory=false|images/s|1328|cpu|1.0
stream|fps=0, compute_ms=30, compute=cpu, deadline_ms=0, page_cache=warm|240|-|thread-per-frame|4|decoder=opencv, prefetch=4|frames/s|30.15|model|0.91
stream|fps=15, compute_ms=30, compute=sleep, deadline_ms=0, page_cache=warm|240|-|threads|2|decoder=opencv, prefetch=4|ms p99 latency|64.33||
stream|fps=30, compute_ms=30, compute=sleep, deadline_ms=0, page_cache=warm|240|-|asyncio|4|decoder=opencv, prefetch=4|ms p99 latency|98.71||
"""  # noqa: E501


def recommendation() -> pd.DataFrame:
    """The answer table of a full study, with every column recommend() gives it."""
    rec = pd.read_csv(io.StringIO(ANSWER), sep="|", dtype={"also_for_n": str})
    return rec.assign(
        machine="local",
        objective="rate",
        ci_low=rec["median"] * 0.97,
        ci_high=rec["median"] * 1.03,
        cv=0.04,
        repetitions=3,
        interfered_trials=0,
        best_variant=rec["variant"],
        best_workers=rec["workers"],
        best_settings=rec["settings"],
        best_median=rec["median"],
        as_good_as_best=2,
        default_choice="sequential x1",
        default_median=rec["median"] / 1.7,
        speedup_over_default=1.7,
    )


# The real workflow's rule graph, each rule touching its output.
SNAKEFILE = textwrap.dedent(
    """
    FIGURES = {figures!r}
    report: "workflow.rst"

    rule all:
        input: expand("out/figure_{{f}}.txt", f=FIGURES)
        localrule: True

    def step(name, inputs):
        rule:
            name: name
            input: inputs
            output: f"out/{{name}}.txt"
            localrule: True
            shell: "touch {{output}}"

    step("dataset", [])
    step("verify_dataset", ["out/dataset.txt"])
    for name in ("decode_reference", "decoded_cache", "device_ceiling"):
        step(name, ["out/verify_dataset.txt"])
    step("trial", ["out/verify_dataset.txt", "out/decode_reference.txt", "out/decoded_cache.txt"])
    step("aggregate", ["out/trial.txt", "out/device_ceiling.txt", "out/decoded_cache.txt"])
    for f in FIGURES:
        step(f"figure_{{f}}", ["out/aggregate.txt"])
    """
)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """The HTML report of a tiny workflow whose first page is the project's own template,
    built with the project's workflow profile (and so its report stylesheet)."""
    work = tmp_path_factory.mktemp("report")
    write_captions(
        [str(ROOT / "workflow/report/workflow.rst")],
        [str(work / "workflow.rst")],
        STUDY,
        recommendation=recommendation(),
        tolerance=0.05,
    )
    (work / "Snakefile").write_text(SNAKEFILE.format(figures=sorted(FIGURES)))
    profile = ROOT / "profiles/default/config.yaml"
    stylesheet = yaml.safe_load(profile.read_text()).get("report-stylesheet")
    for path in [profile, *([ROOT / stylesheet] if stylesheet else [])]:
        (work / path.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, work / path.relative_to(ROOT))
    snakemake(work, "--cores", "1", "--report", "report.html")
    return work / "report.html"


def first_page(report: Path) -> str:
    """The first page's HTML, as the report carries it (a JSON string)."""
    html = report.read_text()
    m = re.search(r"var workflow_desc = (.*?);\s*</script>", html, re.S)
    assert m, "the report has no workflow description"
    return json.loads(m.group(1))


def test_the_first_page_carries_the_whole_answer_and_its_stylesheet(report):
    page = first_page(report)
    table = re.search(r'<table[^>]*class="[^"]*imgread-answer[^"]*".*?</table>', page, re.S)
    assert table, "the answer table lost its class (.. class:: imgread-answer in workflow.rst)"
    assert table.group(0).count("<tr") == len(recommendation()) + 1
    for rate in ("812.4 MB/s", "771.9 megapixels/s", "98.71 ms p99 latency"):
        assert rate in table.group(0)
    # the report carries its stylesheet: the description leaves its narrow column, the rule
    # graph goes under it, and the page starts at its top instead of being centred
    css = " ".join(report.read_text().split())
    assert "div.flex:has(> div > .prose table.imgread-answer) { flex-direction: column; }" in css
    assert "div.h-screen:has(table.imgread-answer) { align-items: flex-start;" in css


def test_snakemakes_template_still_has_the_layout_the_style_overrides(report):
    """The style names Snakemake's Tailwind classes: a Snakemake that lays out its first page
    otherwise needs the style (and this test) looked at again."""
    html = report.read_text()
    assert "grow flex items-center justify-center h-screen overflow-auto" in html
    assert "prose prose-sm max-w-lg" in html and 'id: "rulegraph"' in html


# Run in the page once Snakemake's app and the rule graph are drawn: the boxes of the answer
# table and the graph, and what is on top at the centre of every cell in view.
PROBE = """
<script>
(function probe(tries) {
  var t = document.querySelector("table.imgread-answer") || document.querySelector(".prose table");
  var g = document.querySelector("#rulegraph canvas, #rulegraph svg");
  if (!(t && g && g.getBoundingClientRect().height > 0) && tries > 0) {
    setTimeout(function () { probe(tries - 1); }, 50);
    return;
  }
  function box(el) {
    if (!el) return null;
    var r = el.getBoundingClientRect();
    return {left: r.left, top: r.top, right: r.right, bottom: r.bottom};
  }
  var out = {width: innerWidth, height: innerHeight, table: box(t), graph: box(g),
             cells: 0, seen: 0, covered: []};
  if (t) t.querySelectorAll("td, th").forEach(function (c) {
    out.cells++;
    var r = c.getBoundingClientRect(), x = (r.left + r.right) / 2, y = (r.top + r.bottom) / 2;
    if (y < 0 || y >= innerHeight || x < 0 || x >= innerWidth) return;
    out.seen++;
    var top = document.elementFromPoint(x, y);
    if (!top || !t.contains(top)) {
      var what = top ? top.tagName + "#" + top.id : null;
      out.covered.push([c.textContent.trim().slice(0, 40), what]);
    }
  });
  var pre = document.createElement("pre");
  pre.id = "imgread-probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})(200);
</script>
"""


def chromium(url: str, width: int, height: int, *args: str) -> str:
    """Headless Chromium on ``url`` at ``width`` x ``height`` with ``args``; its stdout."""
    profile = tempfile.mkdtemp(prefix="chromium-")
    proc = subprocess.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={profile}",
            f"--window-size={width},{height}", "--virtual-time-budget=10000", *args, url,
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    shutil.rmtree(profile, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")
@pytest.mark.parametrize("width", WIDTHS)
def test_nothing_is_drawn_over_the_answer_table(report, width):
    probed = report.with_name(f"probed-{width}.html")
    html = report.read_text()
    end = html.rindex("</body>")
    probed.write_text(html[:end] + PROBE + html[end:])
    dom = chromium(f"file://{probed}", width, 1000, "--dump-dom")
    m = re.search(r'<pre id="imgread-probe">(.*?)</pre>', dom, re.S)
    assert m, "the page never drew the answer table and the rule graph"
    p = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    shot = report.with_name(f"first-page-{width}.png")
    chromium(f"file://{report}", width, 1000, f"--screenshot={shot}")
    where = f"(screenshot: {shot})"
    t, g = p["table"], p["graph"]
    assert t and g, f"no answer table or rule graph on the first page {where}"
    # nothing over it: the rule graph's box is apart, and each cell in view is on top
    apart = (
        g["left"] >= t["right"] or g["right"] <= t["left"]
        or g["top"] >= t["bottom"] or g["bottom"] <= t["top"]
    )  # fmt: skip
    assert apart, f"the rule graph {g} overlaps the answer table {t} {where}"
    assert p["covered"] == [], f"cells drawn over: {p['covered'][:5]} {where}"
    assert p["seen"] >= 10, f"only {p['seen']} of {p['cells']} cells in view {where}"
    # the page starts at its top: the table's first row is on screen, not above it
    assert 0 <= t["top"] < p["height"], f"the table starts at y={t['top']:.0f} {where}"
    # whole: its right edge on screen (the 32rem column is far narrower than the table)
    assert t["right"] <= p["width"], f"the table runs to x={t['right']:.0f} {where}"
