// Live job log: follow the job's server-sent events and append log lines and progress.
"use strict";
(function () {
  const log = document.getElementById("log");
  if (!log || log.dataset.terminal === "true" || !window.EventSource) return;
  const progress = document.getElementById("progress");
  const progressText = document.getElementById("progress-text");
  const source = new EventSource(log.dataset.stream);
  source.addEventListener("log", function (e) {
    const event = JSON.parse(e.data);
    const line = document.createElement("span");
    line.className = "level-" + (event.level || "info");
    line.textContent = event.time.slice(11, 19) + " " + event.message + "\n";
    log.appendChild(line);
    log.scrollTop = log.scrollHeight;
  });
  source.addEventListener("progress", function (e) {
    const event = JSON.parse(e.data);
    if (progress) progress.value = event.fraction;
    if (progressText) {
      progressText.textContent = Math.round(event.fraction * 100) + " % " + (event.message || "");
    }
  });
  source.addEventListener("end", function () {
    source.close();
    log.dataset.terminal = "true";
  });
})();
