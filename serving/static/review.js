// The reviewer pages' only script, served by the app itself (the pages' CSP allows no inline script).
// The overview's user table: the filter narrows it to the rows containing the typed text, a click on a column
// heading sorts it by that column (again: the other way), and it shows `data-page-size` rows a page.
// Without the script every row shows, in the server's order (value at stake, largest first).
document.addEventListener("DOMContentLoaded", function () {
  var table = document.getElementById("top-table");
  if (!table) return;
  var input = document.getElementById("user-filter");
  var info = document.getElementById("page-info");
  var prev = document.getElementById("page-prev");
  var next = document.getElementById("page-next");
  var body = table.tBodies[0];
  var rows = Array.prototype.slice.call(body.rows);
  var size = parseInt(table.getAttribute("data-page-size"), 10) || rows.length || 1;
  var page = 0;

  function matching() {
    var q = input ? input.value.trim().toLowerCase() : "";
    return rows.filter(function (row) { return q === "" || row.textContent.toLowerCase().indexOf(q) >= 0; });
  }

  function render() {
    var shown = matching();
    var pages = Math.max(1, Math.ceil(shown.length / size));
    page = Math.min(Math.max(page, 0), pages - 1);
    rows.forEach(function (row) { row.hidden = true; });
    shown.slice(page * size, (page + 1) * size).forEach(function (row) { row.hidden = false; });
    if (info) {
      info.textContent = info.getAttribute("data-template")
        .replace("{page}", String(page + 1)).replace("{pages}", String(pages));
    }
    if (prev) prev.disabled = page === 0;
    if (next) next.disabled = page >= pages - 1;
  }

  function key(row, column, numeric) {
    var cell = row.cells[column];
    if (numeric) {
      var value = parseFloat(cell.getAttribute("data-value"));
      return isNaN(value) ? -Infinity : value;
    }
    return cell.textContent.trim().toLowerCase();
  }

  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, column) {
    var kind = th.getAttribute("data-sort");
    if (!kind) return;
    th.classList.add("sort");
    th.tabIndex = 0;
    function sort() {
      var descending = th.getAttribute("aria-sort") !== "descending";
      Array.prototype.forEach.call(th.parentNode.cells, function (other) { other.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", descending ? "descending" : "ascending");
      var numeric = kind === "num";
      rows.sort(function (a, b) {
        var x = key(a, column, numeric), y = key(b, column, numeric);
        var order = x < y ? -1 : x > y ? 1 : 0;
        return descending ? -order : order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
      page = 0;
      render();
    }
    th.addEventListener("click", sort);
    th.addEventListener("keydown", function (e) { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sort(); } });
  });
  if (input) input.addEventListener("input", function () { page = 0; render(); });
  if (prev) prev.addEventListener("click", function () { page -= 1; render(); });
  if (next) next.addEventListener("click", function () { page += 1; render(); });
  render();
});
