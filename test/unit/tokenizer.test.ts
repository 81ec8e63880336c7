import { describe, expect, it } from 'vitest';
import path from 'node:path';
import { openSafetensorsSync } from '../../runtime/io/safetensors.ts';
import { WordTokenizer } from '../../runtime/tokenizer.ts';

const FIX = path.resolve(import.meta.dirname, '../fixtures/tiny-flux-reference');
const tok = WordTokenizer.fromDir(path.resolve(import.meta.dirname, '../../models/tiny-flux/tokenizer'));

describe('tiny-flux word tokenizer', () => {
  for (const k of [0, 1, 2]) {
    it(`matches the reference input_ids of prompt${k}`, () => {
      const f = openSafetensorsSync(path.join(FIX, `prompt${k}.safetensors`));
      const e = tok.encode(f.metadata.prompt!);
      expect(e.inputIds).toEqual(f.ints('input_ids'));
      expect(e.attentionMask).toEqual([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0]);
      expect(e.unknown).toEqual([]);
    });
  }

  it('lower-cases and splits on any run of whitespace like str.split()', () => {
    const a = tok.encode('a large red circle at the center on a black background');
    const b = tok.encode('  A\tLARGE\n\nred  Circle at\u00a0the\u3000center on a black background \r\n');
    expect(b.inputIds).toEqual(a.inputIds);
  });

  it('unknown words -> <unk> (1), punctuation is not stripped', () => {
    const e = tok.encode('a purple circle on a black background.');
    expect(e.inputIds).toEqual([2, 1, 17, 5, 2, 28, 1, 0, 0, 0, 0, 0]);
    expect(e.unknown).toEqual(['purple', 'background.']);
    expect(tok.encode('constructor toString __proto__').inputIds.slice(0, 3)).toEqual([1, 1, 1]);
  });

  it('truncates to 12 ids and pads with <pad> (0); empty prompt -> all pads', () => {
    const long = tok.encode('a a a a a a a a a a a a a a red');
    expect(long.inputIds).toEqual(new Array(12).fill(2));
    expect(long.attentionMask).toEqual(new Array(12).fill(1));
    expect(tok.encode('').inputIds).toEqual(new Array(12).fill(0));
    expect(tok.encode('   ').attentionMask).toEqual(new Array(12).fill(0));
  });
});
