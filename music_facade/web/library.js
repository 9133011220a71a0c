// Rendering: the library's cards and the "generating now" list. Text goes in with textContent
// only: titles and lyrics come from users and must never become markup.

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

export function statusText(track) {
  if (track.status === "generating") {
    return track.progress === null ? "generating" : `generating ${track.progress}%`;
  }
  return track.status;
}

function cover(track) {
  const img = el("img", "cover");
  img.alt = "";
  img.width = 96;
  img.height = 96;
  img.onerror = () => img.classList.add("missing");
  if (track.cover_url) img.src = track.cover_url;
  else img.classList.add("missing");
  return img;
}

function details(track) {
  const parts = [track.user, track.type, track.style, track.mood];
  if (track.bpm !== null && track.bpm !== undefined) parts.push(`${track.bpm} bpm`);
  return parts.filter(Boolean).join(" · ");
}

// One card; `onPlay(track)` when its button is pressed.
export function trackCard(track, onPlay) {
  const li = el("li", "track");
  li.dataset.id = track.id;
  li.dataset.user = track.user;
  li.append(cover(track));
  const body = el("div", "body");
  body.append(el("span", "title"), el("span", "details"));
  const progress = el("progress", "progress");
  progress.max = 100;
  body.append(progress, el("span", "status"));
  li.append(body);
  const play = el("button", "play", "Play");
  play.type = "button";
  play.addEventListener("click", () => onPlay(track));
  li.append(play);
  updateCard(li, track);
  return li;
}

// A card shows the track as it is now. Play stays enabled whatever the status: the service's
// 409 track_not_ready is the authority, and the page shows it.
export function updateCard(li, track) {
  li.dataset.status = track.status;
  li.querySelector(".title").textContent = track.title || "(untitled)";
  li.querySelector(".details").textContent = details(track);
  li.querySelector(".status").textContent = statusText(track);
  const progress = li.querySelector(".progress");
  progress.hidden = track.status !== "generating";
  if (track.progress !== null) progress.value = track.progress;
}
