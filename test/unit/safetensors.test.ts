import { afterAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  openSafetensors,
  openSafetensorsSync,
  writeSafetensors,
  encodeSafetensors,
  f16ToF32,
  bf16ToF32,
  SafetensorsError,
} from '../../runtime/io/safetensors.ts';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ditforge-st-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
let n = 0;

/** raw file: u64 header length + header text + data bytes */
function raw(header: string | object, data: Uint8Array = new Uint8Array(0), lengthOverride?: bigint): string {
  const hb = new TextEncoder().encode(typeof header === 'string' ? header : JSON.stringify(header));
  const buf = new Uint8Array(8 + hb.length + data.length);
  new DataView(buf.buffer).setBigUint64(0, lengthOverride ?? BigInt(hb.length), true);
  buf.set(hb, 8);
  buf.set(data, 8 + hb.length);
  const p = path.join(dir, `f${n++}.safetensors`);
  fs.writeFileSync(p, buf);
  return p;
}

async function openErr(p: string): Promise<Error> {
  let err: unknown;
  try {
    await openSafetensors(p);
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(SafetensorsError);
  const e = err as Error;
  expect(e.message).toContain(p); // every error names the file
  // the sync (fs) path agrees
  expect(() => openSafetensorsSync(p)).toThrow(e.message);
  return e;
}

describe('safetensors parser', () => {
  it('round-trips write/read with metadata, F32 zero-copy and aligned', async () => {
    const p = path.join(dir, 'rt.safetensors');
    const a = Float32Array.from([1.5, -2, 3.25, Math.PI, -0, 1e-30]);
    const b = Float32Array.from({ length: 7 }, (_, i) => i * 0.1);
    writeSafetensors(p, { a: { dtype: 'F32', shape: [2, 3], data: a }, b: { dtype: 'F32', shape: [7], data: b }, e: { dtype: 'F32', shape: [0, 4], data: new Float32Array(0) } }, { prompt: 'hello', seed: '3' });
    for (const f of [await openSafetensors(p), openSafetensorsSync(p)]) {
      expect(f.metadata).toEqual({ prompt: 'hello', seed: '3' });
      expect(f.names().sort()).toEqual(['a', 'b', 'e']);
      const ta = f.tensor('a');
      expect(ta.dtype).toBe('F32');
      expect(ta.shape).toEqual([2, 3]);
      expect(Array.from(ta.data)).toEqual(Array.from(a));
      expect(Array.from(f.tensor('b').data)).toEqual(Array.from(b));
      expect(f.tensor('e').data.length).toBe(0);
      expect(f.dataStart % 8).toBe(0); // header padded to 8 bytes
      // zero-copy: the view is into the file buffer, not a copy
      expect(f.tensor('a').data.buffer).toBe(f.tensor('b').data.buffer);
    }
  });

  it('round-trips integer tensors (I64 -> numbers, U8, I32)', async () => {
    const p = path.join(dir, 'ints.safetensors');
    writeSafetensors(p, {
      ids: { dtype: 'I64', shape: [1, 4], data: [2, 8, 2 ** 40, -5] },
      px: { dtype: 'U8', shape: [3], data: [0, 128, 255] },
      i32: { dtype: 'I32', shape: [2], data: [-7, 1 << 30] },
    });
    const f = await openSafetensors(p);
    expect(f.ints('ids')).toEqual([2, 8, 2 ** 40, -5]);
    expect(Array.from(f.tensor('ids').data)).toEqual([2, 8, 2 ** 40, -5]);
    expect(f.ints('px')).toEqual([0, 128, 255]);
    expect(f.ints('i32')).toEqual([-7, 1 << 30]);
    expect(() => f.ints('nope')).toThrow(/no tensor "nope"/);
  });

  it('reads the reference fixtures (F32 + I64 + U8, metadata)', async () => {
    const p = path.resolve(import.meta.dirname, '../fixtures/tiny-flux-reference/prompt0.safetensors');
    const f = await openSafetensors(p);
    expect(f.metadata.prompt).toBe('a large red circle at the center on a black background');
    expect(f.tensor('encoder_hidden_states').shape).toEqual([1, 12, 64]);
    expect(f.info('input_ids').dtype).toBe('I64');
    expect(f.info('image_uint8').dtype).toBe('U8');
  });

  it('F16 and BF16 convert exactly on known values (and are converted once)', async () => {
    // f16: 1.0=0x3c00, -2=0xc000, 65504=0x7bff, min subnormal 2^-24=0x0001, 0.5=0x3800, -0=0x8000, inf=0x7c00
    const h = Uint16Array.from([0x3c00, 0xc000, 0x7bff, 0x0001, 0x3800, 0x8000, 0x7c00, 0x3555]);
    const hExp = [1, -2, 65504, 2 ** -24, 0.5, -0, Infinity, 0.333251953125];
    expect(Array.from(f16ToF32(h))).toEqual(hExp);
    expect(Number.isNaN(f16ToF32(Uint16Array.from([0x7e00]))[0])).toBe(true);
    // bf16: upper 16 bits of float32
    const bf = Uint16Array.from([0x3f80, 0xc040, 0x4049, 0x0001, 0xff80]);
    expect(Array.from(bf16ToF32(bf))).toEqual([1, -3, Math.fround(3.140625), Math.fround(2 ** -133), -Infinity]);

    const data = new Uint8Array(h.length * 2 + bf.length * 2);
    data.set(new Uint8Array(h.buffer), 0);
    data.set(new Uint8Array(bf.buffer), h.length * 2);
    const p = raw(
      { h: { dtype: 'F16', shape: [8], data_offsets: [0, 16] }, b: { dtype: 'BF16', shape: [5], data_offsets: [16, 26] } },
      data,
    );
    const f = await openSafetensors(p);
    expect(Array.from(f.tensor('h').data)).toEqual(hExp);
    expect(Array.from(f.tensor('b').data)).toEqual([1, -3, Math.fround(3.140625), Math.fround(2 ** -133), -Infinity]);
    expect(f.tensor('h').data).toBe(f.tensor('h').data); // cached
  });

  it('unaligned F32 data is copied, values intact', async () => {
    const v = Float32Array.from([1.25, -7.5]);
    const data = new Uint8Array(1 + 8);
    data.set(new Uint8Array(v.buffer), 1);
    const hdr = JSON.stringify({ pad: { dtype: 'U8', shape: [1], data_offsets: [0, 1] }, x: { dtype: 'F32', shape: [2], data_offsets: [1, 9] } });
    const p = raw(hdr + ' '.repeat((8 - (hdr.length % 8)) % 8), data);
    expect(Array.from((await openSafetensors(p)).tensor('x').data)).toEqual([1.25, -7.5]);
  });

  it('file shorter than 8 bytes', async () => {
    const p = path.join(dir, 'tiny.safetensors');
    fs.writeFileSync(p, new Uint8Array(5));
    expect((await openErr(p)).message).toMatch(/shorter than the 8-byte header length/);
  });

  it('bad header length (larger than the file, absurd, too small)', async () => {
    expect((await openErr(raw({}, new Uint8Array(0), 1000n))).message).toMatch(/invalid safetensors header length 1000/);
    expect((await openErr(raw({}, new Uint8Array(0), 2n ** 62n))).message).toMatch(/invalid safetensors header length/);
    expect((await openErr(raw('{}', new Uint8Array(0), 0n))).message).toMatch(/invalid safetensors header length 0/);
  });

  it('truncated file (header claims data past the end)', async () => {
    const p = path.join(dir, 'trunc.safetensors');
    writeSafetensors(p, { w: { dtype: 'F32', shape: [4, 4], data: new Float32Array(16) } });
    const full = fs.readFileSync(p);
    fs.writeFileSync(p, full.subarray(0, full.length - 10));
    const e = await openErr(p);
    expect(e.message).toMatch(/tensor "w".*out of range.*truncated/);
    expect((e as SafetensorsError).tensorName).toBe('w');
    // truncated inside the header
    fs.writeFileSync(p, full.subarray(0, 20));
    expect((await openErr(p)).message).toMatch(/header length/);
  });

  it('bad JSON, non-object header, bad metadata', async () => {
    expect((await openErr(raw('{"a": {"dtype": "F32",'))).message).toMatch(/not valid UTF-8 JSON/);
    expect((await openErr(raw('[1, 2]'))).message).toMatch(/must be an object/);
    expect((await openErr(raw({ __metadata__: { seed: 3 } }))).message).toMatch(/"__metadata__"."seed" must be a string/);
    expect((await openErr(raw({ __metadata__: 'x' }))).message).toMatch(/"__metadata__" must be an object/);
    const bad = new Uint8Array([8, 0, 0, 0, 0, 0, 0, 0, 0x7b, 0xff, 0xfe, 0x7d, 32, 32, 32, 32]);
    const p = path.join(dir, 'utf8.safetensors');
    fs.writeFileSync(p, bad);
    expect((await openErr(p)).message).toMatch(/not valid UTF-8 JSON/);
  });

  it('bad dtype, bad shape, bad offsets', async () => {
    const e = await openErr(raw({ w: { dtype: 'F64', shape: [1], data_offsets: [0, 8] } }, new Uint8Array(8)));
    expect(e.message).toMatch(/tensor "w": unsupported dtype "F64" \(supported: F32, F16, BF16, I64, I32, U8\)/);
    expect((await openErr(raw({ w: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, new Uint8Array(4)))).message).toMatch(/tensor "w": shape must be/);
    expect((await openErr(raw({ w: { dtype: 'F32', shape: [1.5], data_offsets: [0, 4] } }, new Uint8Array(4)))).message).toMatch(/shape must be/);
    expect((await openErr(raw({ w: { dtype: 'F32', shape: [1] } }, new Uint8Array(4)))).message).toMatch(/tensor "w": data_offsets must be/);
    expect((await openErr(raw({ w: { dtype: 'F32', shape: [0], data_offsets: [4, 0] } }, new Uint8Array(4)))).message).toMatch(/end before begin/);
    expect((await openErr(raw({ w: 7 }))).message).toMatch(/tensor "w": header entry must be an object/);
  });

  it('shape/byte-range mismatch', async () => {
    const e = await openErr(raw({ w: { dtype: 'F32', shape: [2, 3], data_offsets: [0, 20] } }, new Uint8Array(24)));
    expect(e.message).toMatch(/tensor "w": shape \[2, 3\] of F32 needs 24 bytes but data_offsets \[0, 20\] span 20/);
    expect((await openErr(raw({ w: { dtype: 'F16', shape: [3], data_offsets: [0, 4] } }, new Uint8Array(6)))).message).toMatch(/needs 6 bytes/);
  });

  it('overlapping ranges', async () => {
    const e = await openErr(
      raw({ a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] }, b: { dtype: 'F32', shape: [2], data_offsets: [8, 16] } }, new Uint8Array(16)),
    );
    expect(e.message).toMatch(/tensor "b": data_offsets \[8, 16\] overlap tensor "a" \[0, 16\]/);
  });

  it('ranges outside the data section', async () => {
    const e = await openErr(raw({ a: { dtype: 'F32', shape: [4], data_offsets: [16, 32] } }, new Uint8Array(16)));
    expect(e.message).toMatch(/tensor "a": data_offsets \[16, 32\] out of range: the data section has 16 bytes/);
  });

  it('missing file, missing tensor name lists what is there', async () => {
    await expect(openSafetensors(path.join(dir, 'nope.safetensors'))).rejects.toThrow(/nope.safetensors: cannot open \(ENOENT\)/);
    const p = path.join(dir, 'named.safetensors');
    writeSafetensors(p, { latents: { dtype: 'F32', shape: [1], data: [1] } });
    const f = await openSafetensors(p);
    expect(() => f.tensor('noise')).toThrow(`${p}: no tensor "noise" (file has: latents)`);
  });

  it('encodeSafetensors rejects data/shape mismatch', () => {
    expect(() => encodeSafetensors({ x: { dtype: 'F32', shape: [3], data: [1, 2] } })).toThrow(/"x" has 2 values but shape \[3\] needs 3/);
  });
});
