// Tokenizer directories with only the slow files (spiece.model for T5 / UMT5, vocab.json + merges.txt for
// CLIP and Qwen2): the tokenizer.json ditforge builds from them (runtime/tokenizers/slow-files.ts) gives, token for
// token, the ids transformers gives from the same files (test/fixtures/slow-tokenizer-ids.json, made by
// test/parity/make-slow-tokenizer-references.py) and the ids of the directory's own tokenizer.json.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { HfTokenizer } from '../../runtime/hf-tokenizer.ts';

const FIX = path.resolve(import.meta.dirname, '../fixtures');
const REF = JSON.parse(fs.readFileSync(path.join(FIX, 'slow-tokenizer-ids.json'), 'utf8')) as {
  prompts: string[];
  cases: { dir: string; class: string; max_length: number; ids: number[][] }[];
};
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ditforge-slowtok-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** a copy of a tokenizer folder without its tokenizer.json */
function slowCopy(rel: string, edit?: (dir: string) => void): string {
  const dir = fs.mkdtempSync(path.join(tmp, 't-'));
  for (const f of fs.readdirSync(path.join(FIX, rel))) if (f !== 'tokenizer.json') fs.copyFileSync(path.join(FIX, rel, f), path.join(dir, f));
  edit?.(dir);
  return dir;
}

describe('slow tokenizer files', () => {
  for (const c of REF.cases) {
    it(`${c.dir} (${c.class} from its slow files): transformers' ids and the fast file's ids`, () => {
      const slow = HfTokenizer.fromDir(slowCopy(c.dir));
      const fast = HfTokenizer.fromDir(path.join(FIX, c.dir));
      REF.prompts.forEach((p, k) => {
        expect(slow.encode(p, c.max_length).ids, JSON.stringify(p)).toEqual(c.ids[k]);
        expect(fast.encode(p, c.max_length).ids, JSON.stringify(p)).toEqual(c.ids[k]);
      });
    });
  }
  it('a truncated spiece.model, a bad merges line, or no files it converts are named', () => {
    const cut = slowCopy('wan2.1-random/tokenizer', (d) => fs.truncateSync(path.join(d, 'spiece.model'), 5000));
    expect(() => HfTokenizer.fromDir(cut)).toThrow(/spiece\.model: (truncated|protobuf field)/);
    const merges = slowCopy('flux1-random/tokenizer', (d) => fs.appendFileSync(path.join(d, 'merges.txt'), 'a b c\n'));
    expect(() => HfTokenizer.fromDir(merges)).toThrow(/merges\.txt: line \d+ is not a merge "a b"/);
    const none = slowCopy('flux1-random/tokenizer', (d) => fs.rmSync(path.join(d, 'merges.txt')));
    expect(() => HfTokenizer.fromDir(none)).toThrow(/tokenizer\.json: missing, and no slow files ditforge converts for tokenizer_class "CLIPTokenizer"/);
  });
});
