"""The HTML leaderboard: self-contained, and checked in a real browser (headless Chromium,
driven by its own command line: ``--dump-dom`` of a copy of the page with a probe script
that clicks a header, picks a filter and writes what it saw into the DOM)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from report_records import SPACES, synthetic_rows

from benchmark.cli import main
from benchmark.harness.records import RunStore

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # as root (CI containers) Chromium refuses to start sandboxed
    "--disable-gpu",
    "--no-first-run",
    "--disable-extensions",
    "--disable-background-networking",
    "--virtual-time-budget=5000",  # run the page's scripts to the end before dumping
)
N_ENTRIES = 2 * 2 * (3 + 2 * 2)  # spaces × constraints × (retrain-only + one-shot × tracks)

PROBE = """
<script>
(function () {
  var out = {};
  var table = document.getElementById("results");
  var heads = Array.prototype.map.call(table.tHead.rows[0].cells, function (c) {
    return c.textContent;
  });
  function col(name) { return heads.findIndex(function (h) { return h.indexOf(name) === 0; }); }
  function rows() { return Array.prototype.slice.call(table.tBodies[0].rows); }
  function visible() {
    return rows().filter(function (r) { return r.getClientRects().length > 0; });
  }
  function column(name, list) {
    var c = col(name);
    return (list || visible()).map(function (r) { return r.cells[c].getAttribute("data-sort"); });
  }
  out.headers = heads;
  out.n_rows = rows().length;
  out.n_visible = visible().length;
  out.methods = column("method");
  out.first_cells = visible().slice(0, 3).map(function (r) {
    return r.cells[col("top-1")].textContent;
  });
  var top1 = table.tHead.rows[0].cells[col("top-1")];
  top1.click();
  out.after_click = column("top-1");
  out.header_class = top1.className;
  top1.click();
  out.after_second_click = column("top-1");
  var space = document.getElementById("filter-space");
  space.value = "resnet20";
  space.dispatchEvent(new Event("change"));
  out.filtered_visible = visible().length;
  out.filtered_spaces = visible().map(function (r) { return r.getAttribute("data-space"); });
  out.figure_spaces = Array.prototype.filter.call(
    document.querySelectorAll("figure"), function (f) { return f.getClientRects().length > 0; }
  ).map(function (f) { return f.getAttribute("data-space"); });
  out.shown_text = document.getElementById("results-shown").textContent;
  var track = document.getElementById("filter-track");
  track.value = "inherit";
  track.dispatchEvent(new Event("change"));
  out.both_filters = visible().map(function (r) {
    return r.getAttribute("data-space") + "/" + r.getAttribute("data-track");
  });
  var tracks = document.getElementById("tracks");
  out.tracks_visible = Array.prototype.filter.call(tracks.tBodies[0].rows, function (r) {
    return r.getClientRects().length > 0;
  }).length;
  document.getElementById("reset-filters").click();
  out.after_reset = visible().length;
  out.figures_after_reset = Array.prototype.filter.call(
    document.querySelectorAll("figure"), function (f) { return f.getClientRects().length > 0; }
  ).map(function (f) { return f.getAttribute("data-space"); });
  out.images = Array.prototype.map.call(document.querySelectorAll("figure svg"), function (el) {
    return el.getBoundingClientRect().width;  // inline vector figures, drawn at their size
  });
  out.raster = document.images.length;
  var pre = document.createElement("pre");
  pre.id = "probe-result";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>
"""


def _chromium() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip(
        "no Chromium on this machine: install Debian's chromium package "
        "(apt-get install -y chromium; .ci/run does this when apt-get is available)"
    )


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The leaderboard (with its figures) of the synthetic records, as the CLI writes it."""
    root = tmp_path_factory.mktemp("html")
    RunStore.open(root / "runs" / "synthetic").add(synthetic_rows())
    assert main(["leaderboard", str(root), "--out", str(root / "lb")]) == 0
    return root / "lb" / "leaderboard.html"


def test_the_page_is_self_contained(page: Path) -> None:
    text = page.read_text()
    assert not re.search(r"(?:src|href)\s*=\s*[\"'](?!data:|#)", text), "a fetched resource"
    assert "http://" not in text and "https://" not in text and "//cdn" not in text
    # per space and track, inline SVG (vector, no PNG data)
    assert text.count('<svg role="img" aria-label="acc_vs_bitops_') == len(SPACES) * 2
    assert '<img alt="' not in text  # no PNG in place of a figure's SVG
    pngs = sorted(page.parent.glob("*.png"))  # each figure: a PNG, an SVG beside it, inlined
    assert pngs and all(p.with_suffix(".svg").exists() for p in pngs)
    assert len(re.findall(r"<figure[^>]*><svg", text)) == len(pngs)
    for key in ("space", "dataset", "preset", "constraint", "track"):
        assert f'id="filter-{key}"' in text
    assert text.count('<tr data-space="') >= N_ENTRIES


def _probe(page: Path, tmp_path: Path) -> dict:
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    cmd = [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    done = subprocess.run(
        [*cmd, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=90
    )
    match = re.search(r'<pre id="probe-result">(.*?)</pre>', done.stdout, re.S)
    assert match, f"no probe result (exit {done.returncode}): {done.stderr[-2000:]}"
    return json.loads(match[1].replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))


def test_chromium_renders_sorts_and_filters(page: Path, tmp_path: Path) -> None:
    out = _probe(page, tmp_path)
    # the expected rows render: every (task group, method), in their task-group order
    assert out["n_rows"] == N_ENTRIES and out["n_visible"] == N_ENTRIES
    assert sorted(set(out["methods"])) == ["ompq", "oqat", "qfa", "random", "uniform"]
    assert all(re.fullmatch(r"\d+\.\d\d ± \d+\.\d\d \(n=3\)", c) for c in out["first_cells"])
    assert all(h for h in out["headers"]) and "p vs random" in out["headers"]
    # a click on a header sorts by it (ascending), a second click reverses
    values = [float(v) for v in out["after_click"]]
    assert values == sorted(values) and len(set(values)) > 1
    assert out["header_class"].split()[-1] == "asc"
    assert [float(v) for v in out["after_second_click"]] == sorted(values, reverse=True)
    # a filter hides the rows of other values, two filters combine, "show all" resets
    assert out["filtered_visible"] == N_ENTRIES // 2
    assert set(out["filtered_spaces"]) == {"resnet20"}
    assert out["shown_text"] == f"{N_ENTRIES // 2} of {N_ENTRIES} rows shown"
    assert sorted(set(out["both_filters"])) == ["resnet20/inherit"]
    assert len(out["both_filters"]) == 2 * 2  # oqat and qfa at two constraints
    assert out["tracks_visible"] == 4  # side-by-side rows span both tracks: kept
    assert out["after_reset"] == N_ENTRIES
    # the space filter reaches the figures: one space's (and those of no one space) stay
    assert "resnet20" in out["figure_spaces"] and "mbv3-cifar" not in out["figure_spaces"]
    assert set(out["figure_spaces"]) <= {"resnet20", None}
    assert {"resnet20", "mbv3-cifar"} <= set(out["figures_after_reset"])
    # the figures are embedded and decode
    assert out["images"] and all(width > 100 for width in out["images"])
    assert out["raster"] == 0  # every figure is vector


def test_chromium_screenshot(page: Path, tmp_path: Path) -> None:
    shot = tmp_path / "leaderboard.png"
    cmd = [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    cmd += ["--window-size=1400,1800", f"--screenshot={shot}", page.as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=90, check=False)
    assert shot.is_file() and shot.stat().st_size > 10_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


FIRST_VIEW = """
<script>
(function () {
  var first = document.querySelector("table");
  var best = document.getElementById("best");
  var pre = document.createElement("pre");
  pre.id = "probe-result";
  pre.textContent = JSON.stringify({
    first_table: first.id,
    best_top: best.getBoundingClientRect().top,
    view_height: window.innerHeight,
    bold_cells: best.querySelectorAll("td strong").length,
    warnings_open: Array.prototype.some.call(
      document.querySelectorAll("details.warnings"), function (d) { return d.open; }),
  });
  document.body.appendChild(pre);
})();
</script>
"""


def test_the_page_leads_with_the_best_at_each_budget_in_the_first_view(
    page: Path, tmp_path: Path
) -> None:
    """At 1280×800 the first table, in view, is the best-at-each-budget summary with each
    task's best in bold; warnings (if any) are folded."""
    probe = tmp_path / "first.html"
    probe.write_text(page.read_text().replace("</body>", FIRST_VIEW + "</body>"))
    cmd = [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    cmd += ["--window-size=1280,800", "--dump-dom", probe.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    match = re.search(r'<pre id="probe-result">(.*?)</pre>', done.stdout, re.S)
    assert match, f"no probe result (exit {done.returncode}): {done.stderr[-2000:]}"
    out = json.loads(match[1].replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))
    assert out["first_table"] == "best"
    assert 0 <= out["best_top"] < out["view_height"] <= 800
    # one best per task (space × constraint): its accuracy and its verdict in bold
    assert out["bold_cells"] == 2 * len(SPACES) * 2
    assert not out["warnings_open"]


def test_a_figure_belongs_to_the_task_its_file_name_names() -> None:
    from benchmark.report.html_page import figure_keys

    values = {"space": {"resnet20", "mbv3-cifar"}, "track": {"retrain", "inherit"},
              "dataset": {"digits"}}  # fmt: skip
    assert figure_keys("acc_vs_bitops_mbv3-cifar_digits_smoke_inherit.png", values) == {
        "space": "mbv3-cifar", "dataset": "digits", "track": "inherit",
    }  # fmt: skip
    assert figure_keys("acc_vs_search_cost_resnet20_digits_smoke.png", values) == {
        "space": "resnet20",
        "dataset": "digits",
    }  # fmt: skip: no track in its name, so every track filter shows it
    assert figure_keys("critical_difference_retrain.png", values) == {"track": "retrain"}


def test_the_page_has_no_repeated_ids(page: Path) -> None:
    ids = re.findall(r'\sid="([^"]+)"', page.read_text(encoding="utf-8"))
    assert ids and len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})[:5]
