// Runs usage.ts (compiled by tsc into build/) against a live service and prints what it got.
// Usage: node main.mjs BASE_URL KEY ALIAS
import { allTracks, audioLink, ready } from "./build/usage.js";

const [baseUrl, key, user] = process.argv.slice(2);
console.log(`ready: ${await ready(baseUrl)}`);
const tracks = await allTracks(baseUrl, key, user);
console.log(`paged: ${tracks.length} tracks`);
const done = tracks.find((track) => track.status === "completed");
const link = await audioLink(baseUrl, key, user, done.id);
console.log(`audio: ${link.format} link until ${link.expires_at}`);
