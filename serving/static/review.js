// The reviewer pages' only script, served by the app itself (the pages' CSP allows no inline script):
// the overview's filter narrows the highest-risk table to the rows containing the typed text.
document.addEventListener("DOMContentLoaded", function () {
  var input = document.getElementById("user-filter");
  if (!input) return;
  var rows = document.querySelectorAll("#top-table tbody tr");
  input.addEventListener("input", function () {
    var q = input.value.trim().toLowerCase();
    rows.forEach(function (row) { row.hidden = q !== "" && row.textContent.toLowerCase().indexOf(q) < 0; });
  });
});
