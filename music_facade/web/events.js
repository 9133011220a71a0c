// The change stream in a browser: ask for a ticket (the credential goes in a header), open
// /events with it, and when the stream drops, ask for a new ticket and resume after the last
// event seen (a ticket opens one stream only, so EventSource's own reconnection cannot work).

const EVENTS = [
  "track.created", "track.progress", "track.completed",
  "track.failed", "track.updated", "track.deleted",
];
const RECONNECT_MS = 3000;

// onResync(): the stream is back but had no position to resume from (it dropped before any
// event came): whatever changed meanwhile must be read again (e.g. /tracks).
export function follow(api, { onEvent, onState, onProblem, onResync }) {
  let last = null;
  let opened = false;  // a stream was open before: reopening it without a position loses changes
  let source = null;
  let timer = null;
  let stopped = false;

  async function open() {
    if (stopped) return;
    if (last !== null) {
      // A refused EventSource shows no status: a position the log no longer holds (410
      // changes_expired, after a long time away) would be retried forever. /changes answers the
      // same 410: then start from now, and read the list again once live (onResync).
      try {
        await api.changesSince(last);
      } catch (err) {
        if (err.status === 410) last = null;  // anything else: the ticket below meets it too
      }
      if (stopped) return;
    }
    let ticket;
    try {
      ticket = await api.ticket();
    } catch (err) {
      onProblem(err);
      // A refused credential will be refused again: stop; anything else may pass.
      if (err.status === 401 || err.status === 403) return stop();
      return retry(err.retryAfter);
    }
    if (stopped) return;
    const since = last === null ? "" : `&since=${encodeURIComponent(last)}`;
    const resync = opened && last === null;
    source = new EventSource(api.base + ticket.url + since);
    source.onopen = () => {
      // Open first, then read again: a change in between comes both ways, never neither.
      if (resync) onResync();
      opened = true;
      onState("live");
    };
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

  // Again after RECONNECT_MS, or after the wait the service asked for (429, 503: Retry-After),
  // whichever is longer.
  function retry(waitSeconds = null) {
    onState("reconnecting");
    clearTimeout(timer);
    timer = setTimeout(open, Math.max(RECONNECT_MS, (waitSeconds || 0) * 1000));
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
