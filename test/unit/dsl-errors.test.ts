// DSL errors point at the model file (file:line:col) and say what to change.
import { beforeAll, describe, expect, it } from 'vitest';
import { compilePlan, registerModel } from '../../compiler/index.ts';
import badImport from './fixtures/dsl-bad-import.ts';
import * as F from './fixtures/dsl-bad-models.ts';

const FIX = 'test/unit/fixtures/dsl-bad-models.ts';
const compileErr = (model: string, extra: Record<string, unknown> = {}): string => {
  try {
    compilePlan(model, { component: 'transformer', ...extra });
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error(`${model} compiled without error`);
};

beforeAll(() => {
  for (const d of Object.values(F)) registerModel(d.name, d);
  registerModel('bad-import', badImport);
});

describe('DSL shape errors carry the model-file location', () => {
  it('linear input channels', () => {
    expect(compileErr('bad-linear')).toBe(`${FIX}:14:25: linear 'attn.to_q' expects 128 input channels, got 32 (input shape [1, 5, 32])`);
  });
  it('concat shapes', () => {
    expect(compileErr('bad-concat')).toMatch(new RegExp(`^${FIX}:25:23: concat on axis 1: shapes \\[1, 5, 32\\] and \\[1, 3, 64\\] differ on axis 2`));
  });
  it('heads that do not divide the channels', () => {
    expect(compileErr('bad-heads')).toBe(`${FIX}:35:23: attention: 64 channels cannot be split into 5 heads`);
  });
});

describe('forward patterns are enforced', () => {
  it('Pattern_3 block returning encoder states', () => {
    expect(compileErr('bad-pattern')).toMatch(new RegExp(`^${FIX}:41:17: block 'blocks' \\(Pattern_3\\) returns hidden states only`));
  });
  it('block pattern must match the list pattern', () => {
    expect(compileErr('bad-list-pattern')).toMatch(/Pattern_1 but block list 'blocks' is Pattern_2/);
  });
});

describe('static model-file check (ts-morph)', () => {
  it('rejects imports other than compiler/dsl with file:line:col', () => {
    expect(compileErr('bad-import')).toBe(
      "test/unit/fixtures/dsl-bad-import.ts:2:16: model files may import only from compiler/dsl, not 'node:fs': move this code into the compiler or drop the import",
    );
  });
  it('shipped model files pass', () => {
    expect(() => compilePlan('tiny-flux', { component: 'text_encoder' })).not.toThrow();
  });
});

describe('dims and config errors', () => {
  it('names the invalid value and what is valid', () => {
    expect(compileErr('tiny-flux', { dims: { height: 30 } })).toBe('tiny-flux transformer: height 30 is not valid: must be a multiple of 8 (vae scale 4 x 2x2 packing)');
    expect(compileErr('tiny-flux', { dims: { heigth: 32 } })).toMatch(/unknown dim 'heigth' \(valid dims: batch, height, width, textTokens\)/);
    expect(compileErr('tiny-flux', { component: 'text_encoder', dims: { textTokens: 13 } })).toMatch(/textTokens 13 is not valid: must be at most max_position_embeddings = 12/);
    expect(compileErr('tiny-flux', { config: { num_heads: 3 } })).toMatch(/unknown config key 'num_heads'/);
    expect(compileErr('flux1-dev', { component: 'controlnet' })).toMatch(/model 'flux1-dev' has no controlnet component/);
  });
  it('rope axes must match the head dim', () => {
    expect(compileErr('tiny-flux', { config: { attention_head_dim: 16 } })).toMatch(/^models\/flux1\.ts:\d+:\d+: per-head RMSNorm|rope: table has head dim 32/);
  });
});
