// Where the service is. `./run demo` answers this file itself with the URL it started, so
// nothing is edited by hand; a copy of the app points API_BASE at its own deployment.
// `?api=http://host:port` in the page's address overrides it (an origin only: never put a key
// or token in a URL).
export const API_BASE = "http://127.0.0.1:8080";
