// recsync players (day page and search results): one playback speed for the page, and
// the keyboard: with focus anywhere in a call's row (its player, its links, the row
// itself), Space plays or pauses it and the left and right arrows seek 5 s back or on.
// Typing in a form field is never taken over. Seeking needs the web server to answer
// Range requests (Apache and nginx do for static files). Loaded as a file: the pages'
// Content-Security-Policy allows no inline script.
"use strict";
(function () {
  var STEP = 5; // seconds an arrow key seeks
  var speed = document.getElementById("speed");
  var rate = 1;

  function players() {
    return document.querySelectorAll("table.calls audio");
  }

  function setRate(audio) {
    audio.defaultPlaybackRate = rate;
    audio.playbackRate = rate;
  }

  if (speed) {
    speed.hidden = false;
    var select = speed.querySelector("select");
    rate = Number(select.value) || 1;
    select.addEventListener("change", function () {
      rate = Number(select.value) || 1;
      Array.prototype.forEach.call(players(), setRate);
    });
  }

  // A player that starts takes the page's speed (new search results too); one call plays
  // at a time.
  document.addEventListener("play", function (event) {
    var audio = event.target;
    if (!(audio instanceof HTMLMediaElement)) {
      return;
    }
    setRate(audio);
    Array.prototype.forEach.call(players(), function (other) {
      if (other !== audio && !other.paused) {
        other.pause();
      }
    });
  }, true);

  function typing(element) {
    if (!element || !element.tagName) {
      return false;
    }
    var tag = element.tagName;
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || tag === "BUTTON" ||
      element.isContentEditable;
  }

  function playerOf(element) {
    var row = element && element.closest ? element.closest("table.calls tr") : null;
    return row ? row.querySelector("audio") : null;
  }

  // The player a key acts on, or null: the keys are ours only in a call's row, outside
  // form fields, without modifiers.
  function target(event) {
    if (event.altKey || event.ctrlKey || event.metaKey || event.defaultPrevented) {
      return null;
    }
    var key = event.key;
    if (key !== " " && key !== "ArrowLeft" && key !== "ArrowRight") {
      return null;
    }
    var focused = document.activeElement;
    return typing(focused) ? null : playerOf(focused);
  }

  // Caught before it reaches anything (capture on the window): a focused native player
  // would act on the key as well, and the call would play and pause at once.
  ["keyup", "keypress"].forEach(function (type) {
    window.addEventListener(type, function (event) {
      if (target(event)) {
        event.preventDefault();
        event.stopPropagation();
      }
    }, true);
  });

  window.addEventListener("keydown", function (event) {
    var audio = target(event);
    if (!audio) {
      return;
    }
    var key = event.key;
    event.preventDefault(); // no page scroll
    event.stopPropagation(); // and not the player's own handling as well
    if (key === " ") {
      if (audio.paused) {
        var playing = audio.play();
        if (playing && playing.catch) {
          playing.catch(function () {}); // e.g. a file the browser cannot play: its error shows
        }
      } else {
        audio.pause();
      }
      return;
    }
    var to = audio.currentTime + (key === "ArrowRight" ? STEP : -STEP);
    if (isFinite(audio.duration)) {
      to = Math.min(to, audio.duration);
    }
    audio.currentTime = Math.max(to, 0);
  }, true);

  // `index.html#<uniqueid>`: the call's row takes the focus, so the keys work at once.
  function focusTarget() {
    var id = decodeURIComponent(location.hash.slice(1));
    var row = id ? document.getElementById(id) : null;
    if (row && row.tagName === "TR" && row.closest("table.calls")) {
      row.focus({ preventScroll: true });
    }
  }
  window.addEventListener("hashchange", focusTarget);
  focusTarget();
})();
