// Reading a JSON request body with a size limit: shared by the local API and the dashboard server.

import type { IncomingMessage } from 'node:http';
import { ValidationError } from '../shared/errors.ts';

export const maxBodyBytes = 1024 * 1024;

/** The parsed body; a ValidationError when it is over `maxBodyBytes` or not JSON. */
export async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).byteLength;
    if (size > maxBodyBytes) {
      throw new ValidationError('E_BODY_TOO_LARGE', `request body is larger than ${maxBodyBytes} bytes`);
    }
    chunks.push(chunk as Buffer);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new ValidationError('E_BAD_JSON', 'request body is not valid JSON');
  }
}
