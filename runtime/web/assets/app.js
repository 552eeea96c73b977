// Progressive enhancement only: every page works without this script.
"use strict";

// Times are rendered in UTC (ISO 8601); show them in the viewer's zone.
function localTimes(root) {
  for (const t of root.querySelectorAll("time[datetime]")) {
    const d = new Date(t.getAttribute("datetime"));
    if (!isNaN(d)) {
      t.title = t.getAttribute("datetime");
      t.textContent = d.toLocaleString();
    }
  }
}

// A running job's output, as the agent posts it, over the server's event stream.
function followLog(pre) {
  const status = document.getElementById("live-status");
  const state = document.getElementById("job-state");
  const url = pre.dataset.events + "?kind=log,state&after=" + encodeURIComponent(pre.dataset.after || "0");
  const source = new EventSource(url);
  // The phase of the text already on the page: its marker is there.
  let phase = pre.dataset.phase || null;
  source.addEventListener("log", (e) => {
    const fragment = JSON.parse(e.data);
    if (fragment.log_type !== "output") return;
    if (fragment.phase !== phase) {
      phase = fragment.phase;
      const mark = document.createElement("span");
      mark.className = "phase-mark";
      mark.textContent = "== " + phase + "\n";
      pre.appendChild(mark);
    }
    pre.appendChild(document.createTextNode(fragment.log_data));
    pre.scrollTop = pre.scrollHeight;
  });
  source.addEventListener("state", (e) => {
    const s = JSON.parse(e.data).job_state;
    if (s && state) state.textContent = s;
  });
  source.addEventListener("end", (e) => {
    source.close();
    const s = JSON.parse(e.data).job_state;
    if (state) state.textContent = s;
    if (status) status.textContent = "The job ended: " + s + ". Reload for its results.";
  });
  source.onerror = () => {
    if (status && source.readyState === EventSource.CLOSED) status.textContent = "The live log stopped: reload the page.";
  };
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  const pre = document.querySelector("pre[data-events]");
  if (pre && "EventSource" in window) followLog(pre);
});
