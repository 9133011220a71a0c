// A small caller of the generated types (openapi-typescript) through openapi-fetch, checked with
// `tsc --strict --noEmit` by tests/contract/test_contract_tools.py: pages to the end, handles
// errors.
import createClient from "openapi-fetch";
import type { components, paths } from "./generated/api";

type Track = components["schemas"]["Track"];

type Alias = NonNullable<paths["/music"]["get"]["parameters"]["query"]>["user"];

export async function allTracks(baseUrl: string, key: string, user: Alias): Promise<Track[]> {
  const client = createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${key}` } });
  const tracks: Track[] = [];
  let cursor: string | undefined;
  for (;;) {
    const { data, error, response } = await client.GET("/music", {
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

export async function ready(baseUrl: string): Promise<boolean> {
  const client = createClient<paths>({ baseUrl });
  const { data } = await client.GET("/readyz");
  return data?.status === "ready";
}
