/**
 * Raw deflate undone by the platform's DecompressionStream (the window's browser or Electron, and
 * Node ≥ 20.12): how the window inflates an index file's deflated columns (the core uses zlib).
 */
export async function inflateRaw(bytes: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream().pipeThrough(new DecompressionStream('deflate-raw'));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}
