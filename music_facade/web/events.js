// The change stream in a browser: ask for a ticket (the credential goes in a header), open
// /events with it, and when the stream drops, ask for a new ticket and resume after the last
// event seen (a ticket opens one stream only, so EventSource's own reconnection cannot work).

const EVENTS = [
  "track.created", "track.progress", "track.completed",
  "track.failed", "track.updated", "track.deleted",
];
const RECONNECT_MS = 3000;

export function follow(api, { onEvent, onState, onProblem }) {
  let last = null;
  let source = null;
  let timer = null;
  let stopped = false;

  async function open() {
    if (stopped) return;
    let ticket;
    try {
      ticket = await api.ticket();
    } catch (err) {
      onProblem(err);
      // A refused credential will be refused again: stop; anything else may pass.
      if (err.status === 401 || err.status === 403) return stop();
      return retry();
    }
    if (stopped) return;
    const since = last === null ? "" : `&since=${encodeURIComponent(last)}`;
    source = new EventSource(api.base + ticket.url + since);
    source.onopen = () => onState("live");
    source.onerror = () => {
      source.close();
      retry();
    };
    for (const name of EVENTS) {
      source.addEventListener(name, (e) => {
        last = e.lastEventId;
        onEvent(name, JSON.parse(e.data));
      });
    }
  }

  function retry() {
    onState("reconnecting");
    clearTimeout(timer);
    timer = setTimeout(open, RECONNECT_MS);
  }

  function stop() {
    stopped = true;
    clearTimeout(timer);
    if (source) source.close();
    onState("off");
  }

  open();
  return { stop };
}
