// Values that travel between the launcher and its ranks: worker threads get them structured-cloned,
// mpirun processes as JSON. Typed arrays become { __typed, base64 } so both carry them exactly.
const KINDS = { Float32Array, Uint8Array, Int32Array } as const;
type Kind = keyof typeof KINDS;

interface Wired {
  __typed: Kind;
  b64: string;
}

/** a copy of `v` with every Float32Array / Uint8Array / Int32Array (nested in objects and arrays) as base64 */
export function toWire(v: unknown): unknown {
  for (const [kind, ctor] of Object.entries(KINDS) as [Kind, (typeof KINDS)[Kind]][]) {
    if (v instanceof ctor) return { __typed: kind, b64: Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64') } satisfies Wired;
  }
  if (Array.isArray(v)) return v.map(toWire);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, toWire(x)]));
  return v;
}

/** the inverse of toWire */
export function fromWire<T>(v: unknown): T {
  if (v && typeof v === 'object' && typeof (v as Wired).__typed === 'string' && typeof (v as Wired).b64 === 'string') {
    const b = Buffer.from((v as Wired).b64, 'base64');
    const buf = b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
    return new KINDS[(v as Wired).__typed](buf) as T;
  }
  if (Array.isArray(v)) return v.map((x) => fromWire(x)) as T;
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, fromWire(x)])) as T;
  return v as T;
}
