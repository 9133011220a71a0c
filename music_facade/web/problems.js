// Every problem the service answers, as a sentence a user can act on. The problem+json
// `title` says what went wrong and `detail` the specifics; both are meant to be shown.
import { ApiProblem, Unreachable } from "./api.js";

export function describe(err, base) {
  if (err instanceof Unreachable) {
    return `Cannot reach the service at ${base}: it is not running, or it does not allow this ` +
      `page's origin (${location.origin}) in its [cors] origins.`;
  }
  if (!(err instanceof ApiProblem)) return `Something went wrong: ${err.message || err}`;
  const said = [err.title, err.detail].filter(Boolean).join(": ").replace(/\.$/, "");
  const wait = err.retryAfter === null ? "" : ` Try again in ${err.retryAfter} s.`;
  switch (err.status) {
    case 401:
      return `Not signed in (401): ${said}. Check the key, or ask for a new one.`;
    case 403:
      return `Not allowed (403): ${said}.`;
    case 409:
      if (err.code === "track_not_ready") {
        return `This track cannot be played yet (409): ${said}.` +
          (err.trackStatus ? ` It is ${err.trackStatus}.` : "");
      }
      return `Conflict (409): ${said}.`;
    case 429:
      return `Slow down (429): ${said}.${wait || " Wait a moment and try again."}`;
    case 503:
      return `The service is unavailable right now (503): ${said}.` +
        (wait || " Try again in a moment.");
    default:
      return `The service answered ${err.status}: ${said || "no details"}.`;
  }
}
