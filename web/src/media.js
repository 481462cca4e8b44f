// Picks the media transport from the edge's configuration (GET /api/config), never from page code.
import { config } from './api.js';

let transport;
export async function media() {
  if (!transport) {
    const { mediaMode } = await config();
    transport = mediaMode === 'ivs' ? import('./media-ivs.js') : import('./media-local.js');
  }
  return transport;
}
