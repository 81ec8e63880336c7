// multipart/form-data bodies (the OpenAI edits endpoint: `image` / `image[]` files, `url` / `url[]` and the
// other fields as text) turned into the JSON body the route's schema validates: a file becomes a base64 data
// URI, a repeated or `[]` field a list, and a text field whose schema type is a number, integer or boolean
// that type (a value that does not parse stays a string, so the schema error names the field).
import { Busboy, type BusboyHeaders, type BusboyInstance } from '@fastify/busboy';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { UserError } from '../model-dir.ts';

type Props = Record<string, { type?: string; anyOf?: { type?: string }[] }>;

/** registers the parser (the body limit applies to the whole form, as to JSON) */
export function acceptMultipart(app: FastifyInstance): void {
  app.addContentTypeParser('multipart/form-data', { parseAs: 'buffer' }, (req, body, done) => {
    parseForm(req, body as Buffer).then(
      (v) => done(null, v),
      (e: Error) => done(e, undefined),
    );
  });
}

function parseForm(req: FastifyRequest, body: Buffer): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const out: Record<string, unknown> = {};
    const put = (name: string, v: string): void => {
      const key = name.endsWith('[]') ? name.slice(0, -2) : name;
      const had = out[key];
      if (had === undefined) out[key] = name.endsWith('[]') ? [v] : v;
      else out[key] = Array.isArray(had) ? [...had, v] : [had, v];
    };
    let bb: BusboyInstance;
    try {
      bb = new Busboy({ headers: req.headers as BusboyHeaders });
    } catch (e) {
      reject(new UserError(`multipart body: ${(e as Error).message}`));
      return;
    }
    const files: Promise<void>[] = [];
    bb.on('file', (name, stream, _filename, _enc, mime) => {
      const parts: Buffer[] = [];
      files.push(
        new Promise((done, fail) => {
          stream.on('data', (d: Buffer) => parts.push(d));
          stream.on('error', fail);
          stream.on('end', () => {
            const type = /^image\/[a-z0-9.+-]+$/i.test(mime) ? mime : 'image/png';
            put(name, `data:${type};base64,${Buffer.concat(parts).toString('base64')}`);
            done();
          });
        }),
      );
    });
    bb.on('field', (name, v) => put(name, v));
    bb.on('error', (e: Error) => reject(new UserError(`multipart body: ${e.message}`)));
    bb.on('finish', () => {
      Promise.all(files).then(() => resolve(out), reject);
    });
    bb.end(body);
  });
}

/** the text fields of a multipart body in the types `props` declares (a preValidation step) */
export function typedFormFields(body: Record<string, unknown>, props: Props): void {
  for (const [k, v] of Object.entries(body)) {
    const p = props[k];
    if (!p || typeof v !== 'string') continue;
    const types = p.type ? [p.type] : (p.anyOf ?? []).map((a) => a.type);
    if (types.includes('string')) continue;
    if (types.includes('number') || types.includes('integer')) {
      const n = Number(v);
      if (v.trim() !== '' && Number.isFinite(n)) body[k] = n;
    } else if (types.includes('boolean') && (v === 'true' || v === 'false')) body[k] = v === 'true';
    else if (types.includes('object') || types.includes('array')) {
      try {
        body[k] = JSON.parse(v);
      } catch {
        throw new UserError(`body.${k}: must be JSON (${types.join(' or ')}) in a multipart form, got ${JSON.stringify(v.slice(0, 40))}`);
      }
    }
  }
}
