// The example app: sign in, list the library from /tracks, search, filter and page, play a
// track, and follow tracks as they generate. Every problem the service answers is shown in
// the message bar.
import { Api } from "./api.js";
import { API_BASE } from "./config.js";
import { follow } from "./events.js";
import { trackCard, updateCard } from "./library.js";
import { describe } from "./problems.js";

// ?api=http://host:port overrides config.js: an origin only, never a credential.
const api = new Api(new URLSearchParams(location.search).get("api") || API_BASE);
// The key lives in this tab's sessionStorage only: gone when the tab closes, never in a URL.
const STORED = "music-facade-example.credential";

const $ = (id) => document.getElementById(id);
const view = {
  query: {},
  cursor: null,        // the page shown: null is the first
  nextCursor: null,
  asked: 0,            // /tracks requests made: only the latest one's answer is shown
  stream: null,
  streamTrouble: false, // the message shown is the live stream's: cleared once it is back
  live: new Map(),     // track id -> its entry in "Generating now"
  accounts: new Set(), // the aliases seen in answers: suggestions for the account filter
};

function say(text) {
  $("message").textContent = text;
  $("message").hidden = !text;
}

function problem(err) {
  view.streamTrouble = false;
  say(describe(err, api.base));
  // A key that worked can stop working (revoked, rotated out): back to the sign-in form.
  if (err.status === 401) signOut(false);
}

function streamProblem(err) {
  problem(err);
  view.streamTrouble = true;
}

async function signIn(credential) {
  api.signIn(credential);
  say("");
  try {
    await show({}, null);
  } catch (err) {
    return problem(err);
  }
  sessionStorage.setItem(STORED, credential);
  $("sign-in").hidden = true;
  $("library").hidden = false;
  $("sign-out").hidden = false;
  view.stream = follow(api, {
    onEvent,
    onState,
    onProblem: streamProblem,
    // Back with no position to resume from (it dropped before any event came): read the page
    // shown again, so nothing changed meanwhile is missed.
    onResync: () => showOrSay(view.query, view.cursor),
  });
}

function signOut(clearMessage = true) {
  if (view.stream) view.stream.stop();
  view.stream = null;
  api.signOut();
  sessionStorage.removeItem(STORED);
  $("player").pause();
  $("search").reset(); // the next one to sign in starts from the whole library
  $("library").hidden = true;
  $("sign-out").hidden = true;
  $("sign-in").hidden = false;
  if (clearMessage) say("");
}

// One page of /tracks for `query`, from `cursor` (null: the first page).
// Answers can arrive out of order (a filter changed while the last search was on its way): one
// to a request since superseded is dropped, answer or problem, and show() returns false.
async function show(query, cursor) {
  const asked = ++view.asked;
  let page;
  try {
    page = await api.tracks({ ...query, cursor });
  } catch (err) {
    if (asked !== view.asked) return false;
    throw err;
  }
  if (asked !== view.asked) return false;
  view.query = query;
  view.cursor = cursor;
  view.nextCursor = page.has_more ? page.next_cursor : null;
  $("tracks").replaceChildren(...page.items.map((t) => trackCard(t, play)));
  suggestAccounts(page.items.map((t) => t.user));
  $("summary").textContent = page.total === 1 ? "1 track" : `${page.total} tracks`;
  $("next-page").disabled = view.nextCursor === null;
  $("first-page").disabled = cursor === null;
  return true;
}

function suggestAccounts(users) {
  const before = view.accounts.size;
  for (const user of users) view.accounts.add(user);
  if (view.accounts.size === before) return;
  const options = [...view.accounts].sort().map((user) => {
    const option = document.createElement("option");
    option.value = user;
    return option;
  });
  $("users").replaceChildren(...options);
}

async function showOrSay(query, cursor) {
  try {
    if (await show(query, cursor)) say("");
  } catch (err) {
    problem(err);
  }
}

async function play(track) {
  try {
    const link = await api.audio(track);   // {url, format, expires_at}
    const player = $("player");
    player.src = link.url;
    $("now-playing").textContent = `Playing: ${track.title || "(untitled)"}`;
    say("");
    await player.play();
  } catch (err) {
    if (err.name === "NotAllowedError") return say("Press play on the player to listen.");
    if (err.name === "NotSupportedError") return say("The browser cannot play this file.");
    problem(err);
  }
}

function onEvent(name, data) {
  const track = name === "track.deleted" ? null : { ...data.track, user: data.user, type: data.type };
  const id = track ? track.id : data.id;
  const card = $("tracks").querySelector(`li[data-id="${CSS.escape(id)}"]`);
  if (card && track) updateCard(card, track);
  if (card && !track) card.remove();
  // "Generating now": every track seen generating, until it completes or fails (kept visible,
  // with its outcome, so a user sees it finish).
  let entry = view.live.get(id);
  if (!entry && track && track.status === "generating") {
    entry = trackCard(track, play);
    view.live.set(id, entry);
    $("live-list").prepend(entry);
    $("live").hidden = false;
  }
  if (entry && track) updateCard(entry, track);
  if (entry && !track) entry.remove();
}

function onState(state) {
  // Back live: what the stream had said while it was down no longer holds.
  if (state === "live" && view.streamTrouble) say("");
  const shown = { live: "Live", reconnecting: "Reconnecting…", off: "" }[state];
  $("live-state").textContent = shown;
  $("live-state").dataset.state = state;
  $("live-state").hidden = !shown;
}

function currentQuery() {
  return {
    q: $("q").value.trim(),
    user: $("user").value.trim(),
    status: $("status").value,
    type: $("type").value,
  };
}

let typing = null;
$("q").addEventListener("input", () => {
  clearTimeout(typing);
  typing = setTimeout(() => showOrSay(currentQuery(), null), 300);
});
for (const id of ["user", "status", "type"]) {
  $(id).addEventListener("change", () => showOrSay(currentQuery(), null));
}
$("search").addEventListener("submit", (e) => {
  e.preventDefault();
  clearTimeout(typing);
  showOrSay(currentQuery(), null);
});
$("next-page").addEventListener("click", () => showOrSay(view.query, view.nextCursor));
$("first-page").addEventListener("click", () => showOrSay(view.query, null));
$("sign-in").addEventListener("submit", (e) => {
  e.preventDefault();
  signIn($("key").value.trim());
});
$("sign-out").addEventListener("click", () => signOut());

const kept = sessionStorage.getItem(STORED);
if (kept) signIn(kept);
