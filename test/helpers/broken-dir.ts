// Writable copies of a model-directory fixture (without its references), each broken by an edit, for
// the tests that a broken directory gets an error naming the file and the key or field.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll } from 'vitest';
import { openSafetensorsSync, writeSafetensors } from '../../runtime/io/safetensors.ts';

/** `broken(edit)` copies `fixture` into a scratch folder (removed after the file's tests) and applies `edit`. */
export function brokenCopies(fixture: string, prefix: string): (edit: (dir: string) => void) => string {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
  let n = 0;
  return (edit) => {
    const dir = path.join(tmp, `m${n++}`);
    // dereference: a fixture's links (wan2.2-random shares wan2.1-random's components) become copies, so an edit never reaches the original
    fs.cpSync(fixture, dir, { recursive: true, dereference: true, filter: (src) => !src.includes(`${path.sep}reference`) });
    for (const f of fs.readdirSync(dir, { recursive: true }) as string[]) fs.chmodSync(path.join(dir, f), 0o755);
    edit(dir);
    return dir;
  };
}

/** rewrites a safetensors file with the tensor `from` renamed to `to` (float32) */
export function renameTensor(file: string, from: string, to: string): void {
  const st = openSafetensorsSync(file);
  const tensors: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
  for (const name of st.names()) {
    const t = st.tensor(name);
    tensors[name === from ? to : name] = { dtype: 'F32', shape: t.shape, data: Float32Array.from(t.data) };
  }
  fs.rmSync(file);
  writeSafetensors(file, tensors);
}

/** edits a JSON file in place */
export function editJson(file: string, edit: (v: Record<string, unknown>) => void): void {
  const v = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  edit(v);
  fs.writeFileSync(file, JSON.stringify(v));
}
