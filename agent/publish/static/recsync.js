// recsync day page: the filter box narrows the calls as you type.
// Loaded as a file (the pages' Content-Security-Policy allows no inline script).
"use strict";
(function () {
  var box = document.getElementById("filter-box");
  var input = document.getElementById("filter");
  var table = document.getElementById("calls");
  if (!box || !input || !table) {
    return;
  }
  var rows = Array.prototype.slice.call(table.tBodies[0].rows);
  var shown = document.getElementById("shown");
  var noMatch = document.getElementById("no-match");
  var texts = null; // each row's visible text, lower case, read once on first use

  function rowText(row) {
    var parts = [];
    for (var i = 0; i < row.cells.length; i++) {
      if (!row.cells[i].classList.contains("rec")) {
        parts.push(row.cells[i].textContent);
      }
    }
    return parts.join(" ").replace(/\s+/g, " ").toLowerCase();
  }

  function apply() {
    var words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
    if (texts === null) {
      texts = rows.map(rowText);
    }
    var count = 0;
    for (var i = 0; i < rows.length; i++) {
      var match = words.every(function (word) {
        return texts[i].indexOf(word) !== -1;
      });
      if (rows[i].hidden === match) {
        rows[i].hidden = !match;
      }
      if (match) {
        count++;
      }
    }
    shown.textContent = words.length ? count + " of " + rows.length : "";
    noMatch.hidden = count !== 0;
  }

  box.hidden = false;
  input.addEventListener("input", apply);
  if (input.value) {
    apply(); // the browser kept the text when coming back to the page
  }
})();
