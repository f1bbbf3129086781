// The live view of a stream: its newest annotated frame, fps, lag, dropped frames, zone and line counts and the
// last events, following the stream's Server-Sent Events (read with fetch, so the API key header goes along).
"use strict";

let following = null; // {name, controller} of the stream followed
let frameUrl = null; // the object URL of the picture shown
let framePending = false;

async function loadStreams() {
  let listing;
  try {
    const response = await api("/v1/streams");
    if (!response.ok) return;
    listing = await response.json();
  } catch (_) { return; }
  const select = $("#stream");
  const chosen = select.value;
  const names = listing.streams.map((s) => s.id);
  select.replaceChildren(...names.map((name) => new Option(name, name)));
  if (names.includes(chosen)) select.value = chosen;
  $("#no-streams").hidden = names.length > 0;
  $("#stream-view").hidden = names.length === 0;
  const current = listing.streams.find((s) => s.id === select.value);
  if (current) showStatus(current);
  if (select.value && (!following || following.name !== select.value)) follow(select.value);
}

function showStatus(status) {
  const badge = $("#stream-state");
  badge.textContent = status.reason ? `${status.state}: ${status.reason}` : status.state;
  badge.className = `badge state-${status.state}`;
  $("#stream-dropped").textContent = status.source.dropped;
  $("#stream-fps").textContent = status.fps.toFixed(1);
}

async function follow(name) {
  if (following) following.controller.abort();
  const controller = new AbortController();
  following = { name, controller };
  try {
    const response = await api(`/v1/streams/${encodeURIComponent(name)}/results`, { signal: controller.signal });
    if (!response.ok) { $("#stream-state").textContent = await errorText(response); following = null; return; }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block.split("\n").filter((line) => line.startsWith("data: ")).map((line) => line.slice(6));
        if (data.length) showResult(JSON.parse(data.join("\n")));
      }
    }
  } catch (_) { /* aborted, or the connection dropped: the next listing follows again */ }
  if (following && following.controller === controller) following = null;
}

function showResult(result) {
  $("#stream-lag").textContent = `${result.lag_ms.toFixed(0)} ms`;
  $("#stream-number").textContent = result.frame;
  const rows = [];
  for (const [name, zone] of Object.entries(result.zones)) {
    const byClass = Object.entries(zone.counts).map(([cls, n]) => `${cls} ${n}`).join(", ");
    rows.push([name, zone.count, byClass]);
  }
  for (const [name, line] of Object.entries(result.lines)) rows.push([name, `in ${line.in} / out ${line.out}`, ""]);
  $("#stream-zones tbody").replaceChildren(...rows.map((cells) => {
    const row = document.createElement("tr");
    row.dataset.name = cells[0];
    cells.forEach((value) => { row.insertCell().textContent = value; });
    return row;
  }));
  const list = $("#stream-events");
  for (const event of result.events) {
    const item = document.createElement("li");
    const when = new Date(event.frame_time * 1000).toLocaleTimeString();
    item.textContent = `${when} ${event.rule} (${event.kind})` + (event.track_id === null ? "" : ` track ${event.track_id}`);
    list.prepend(item);
  }
  while (list.children.length > 10) list.lastChild.remove();
  refreshFrame(result.stream);
}

async function refreshFrame(name) {
  if (framePending) return; // one picture at a time: a slow link shows fewer frames, never a backlog
  framePending = true;
  try {
    const response = await api(`/v1/streams/${encodeURIComponent(name)}/frame.jpg`);
    if (response.ok) {
      const url = URL.createObjectURL(await response.blob());
      $("#stream-frame").src = url;
      if (frameUrl) URL.revokeObjectURL(frameUrl);
      frameUrl = url;
    }
  } finally { framePending = false; }
}

window.addEventListener("DOMContentLoaded", () => {
  $("#stream").addEventListener("change", () => follow($("#stream").value));
  loadStreams();
  setInterval(loadStreams, 2000);
});
