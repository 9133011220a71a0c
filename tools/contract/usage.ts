// A small caller of the generated types (openapi-typescript) through openapi-fetch, checked with
// `tsc --strict` and run by tests/contract/test_contract_tools.py (main.mjs) against a live
// service: lists every track of an alias (following next_cursor), gets a track's audio link as
// JSON, handles errors. The base URL is given at run time: one generated client, any deployment.
import createClient from "openapi-fetch";
import type { components, paths } from "./generated/api";

type Track = components["schemas"]["Track"];
type AudioLink = components["schemas"]["AudioLink"];
// One plain string on every operation, whichever deployment the types were generated from.
type Alias = components["schemas"]["Alias"];

function client(baseUrl: string, key: string) {
  return createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${key}` } });
}

export async function allTracks(baseUrl: string, key: string, user: Alias): Promise<Track[]> {
  const music = client(baseUrl, key);
  const tracks: Track[] = [];
  let cursor: string | undefined;
  for (;;) {
    const { data, error, response } = await music.GET("/music", {
      params: { query: { user, type: "song", cursor } },
    });
    if (error !== undefined) {
      throw new Error(`${response.status} ${error.code}: ${error.detail}`);
    }
    tracks.push(...data.items);
    if (data.next_cursor === null) {
      return tracks;
    }
    cursor = data.next_cursor;
  }
}

// The JSON link of a completed track: without `Accept: application/json` the operation
// answers 302 to the file (for plain links and `curl -L`), and fetch would follow it.
export async function audioLink(
  baseUrl: string,
  key: string,
  user: Alias,
  id: string,
): Promise<AudioLink> {
  const { data, error, response } = await client(baseUrl, key).GET("/music/{id}/audio", {
    params: { path: { id }, query: { user }, header: { Accept: "application/json" } },
  });
  if (data === undefined) {
    throw new Error(`${response.status} ${error?.code ?? "no JSON link"}`);
  }
  return data;
}

export async function ready(baseUrl: string): Promise<boolean> {
  const { data } = await createClient<paths>({ baseUrl }).GET("/readyz");
  return data?.status === "ready";
}
