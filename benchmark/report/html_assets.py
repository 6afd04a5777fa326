"""The HTML leaderboard's inline stylesheet and script (no network: nothing is fetched).

The script makes every ``table.sortable`` sortable by a click on a header (numbers by
their ``data-sort`` value, text alphabetically, empty cells last; a second click reverses)
and filters the rows of every ``table.filterable`` by the page's ``select[data-filter]``
menus: a row whose ``data-<key>`` differs from a chosen value is hidden; a row without
that attribute (it spans the key, e.g. both tracks) is kept. Each filterable table's
``.shown`` line counts the rows left.
"""

from __future__ import annotations

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5rem 2rem;
       color: #222; line-height: 1.4; }
h1 { margin-bottom: 0.3rem; }
h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }
nav a { margin-right: 0.9rem; }
p.note, details { color: #555; font-size: 0.85rem; max-width: 70rem; }
p.warn { color: #8a4b00; background: #fff4e0; padding: 0.3rem 0.6rem; max-width: 70rem; }
code { background: #f3f3f3; padding: 0 0.2rem; }
.filters { position: sticky; top: 0; z-index: 3; background: #fff; padding: 0.5rem 0;
           border-bottom: 1px solid #ddd; display: flex; flex-wrap: wrap; gap: 0.4rem 1.2rem;
           align-items: center; }
.filters label { font-size: 0.9rem; }
.filters select { margin-left: 0.3rem; font-size: 0.9rem; }
.filters button { font-size: 0.85rem; }
.shown { color: #555; font-size: 0.85rem; margin: 0.2rem 0; }
.scroll { overflow: auto; max-height: 78vh; max-width: 100%; width: fit-content;
          border: 1px solid #ddd; }
table.filterable td:first-child, table.filterable th:first-child { position: sticky; left: 0;
          background: #f4f6f9; z-index: 2; border-right: 2px solid #ccc; }
table { border-collapse: separate; border-spacing: 0; margin: 0; font-size: 0.85rem; }
th, td { border: 0; border-right: 1px solid #ddd; border-bottom: 1px solid #ddd;
         padding: 0.25rem 0.5rem; text-align: right; white-space: nowrap; }
td.text, th.text { text-align: left; }
th { background: #eef2f7; cursor: pointer; user-select: none; position: sticky; top: 0;
     z-index: 1; vertical-align: bottom; white-space: normal; min-width: 4rem; }
th:hover { background: #dbe4ee; }
th.asc::after { content: " \\25B2"; } th.desc::after { content: " \\25BC"; }
tbody tr:nth-child(even) { background: #f8f9fb; }
tbody tr:hover { background: #fffbe6; }
td.none { color: #999; }
figure { display: inline-block; margin: 0 1.5rem 1.5rem 0; vertical-align: top;
         max-width: 100%; }
figure[hidden] { display: none; }
figure img, figure svg { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.8rem; }
"""

JS = """
(function () {
  function sortKey(row, col) {
    var raw = row.cells[col].getAttribute("data-sort");
    if (raw === null || raw === "") return null;
    var num = Number(raw);
    return isNaN(num) ? raw.toLowerCase() : num;
  }
  document.querySelectorAll("table.sortable th").forEach(function (th) {
    th.title = "click to sort";
    th.addEventListener("click", function () {
      var table = th.closest("table"), body = table.tBodies[0];
      var col = Array.prototype.indexOf.call(th.parentNode.children, th);
      var asc = !th.classList.contains("asc");
      table.querySelectorAll("th").forEach(function (h) { h.classList.remove("asc", "desc"); });
      th.classList.add(asc ? "asc" : "desc");
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = sortKey(a, col), y = sortKey(b, col);
        if (x === null) return y === null ? 0 : 1;  // missing values always last
        if (y === null) return -1;
        if (typeof x !== typeof y) { x = String(x); y = String(y); }
        var c = x < y ? -1 : x > y ? 1 : 0;
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
  var menus = Array.prototype.slice.call(document.querySelectorAll("select[data-filter]"));
  function applyFilters() {
    var chosen = {};
    menus.forEach(function (m) {
      if (m.value !== "") chosen[m.getAttribute("data-filter")] = m.value;
    });
    document.querySelectorAll("figure.filterable").forEach(function (figure) {
      var keep = true;
      for (var key in chosen) {
        var value = figure.getAttribute("data-" + key);
        if (value !== null && value !== chosen[key]) { keep = false; break; }
      }
      figure.hidden = !keep;
    });
    document.querySelectorAll("table.filterable").forEach(function (table) {
      var rows = table.tBodies[0].rows, shown = 0;
      for (var i = 0; i < rows.length; i++) {
        var keep = true;
        for (var key in chosen) {
          var value = rows[i].getAttribute("data-" + key);
          if (value !== null && value !== chosen[key]) { keep = false; break; }
        }
        rows[i].hidden = !keep;
        if (keep) shown++;
      }
      var count = document.getElementById(table.id + "-shown");
      if (count) count.textContent = shown + " of " + rows.length + " rows shown";
    });
  }
  menus.forEach(function (m) { m.addEventListener("change", applyFilters); });
  var reset = document.getElementById("reset-filters");
  if (reset) reset.addEventListener("click", function () {
    menus.forEach(function (m) { m.value = ""; });
    applyFilters();
  });
  applyFilters();
})();
"""
