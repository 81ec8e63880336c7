// Tokenizer directories that hold only the "slow" files: the same tokenizer.json transformers' own
// converters (convert_slow_tokenizer.py: T5Converter over SpmConverter, CLIPConverter) build from them,
// so the kept library (@huggingface/tokenizers) runs it. T5 / UMT5: `spiece.model` (a SentencePiece
// ModelProto, read here with a minimal protobuf reader). CLIP and Qwen2: `vocab.json` + `merges.txt`.
import fs from 'node:fs';
import path from 'node:path';

export class SlowTokenizerError extends Error {
  constructor(message: string, readonly file: string) {
    super(message);
    this.name = 'SlowTokenizerError';
  }
}

// ---- protobuf (wire format: varint keys, varint / fixed32 / length-delimited fields) ----

interface Field {
  no: number;
  wire: number;
  /** varint value (wire 0) */
  int?: number;
  /** fixed32 as float (wire 5) */
  f32?: number;
  /** bytes (wire 2) */
  bytes?: Uint8Array;
}

function fields(buf: Uint8Array, file: string): Field[] {
  const out: Field[] = [];
  let p = 0;
  const varint = (): number => {
    let v = 0;
    let mul = 1;
    for (;;) {
      if (p >= buf.length) throw new SlowTokenizerError(`${file}: truncated protobuf varint at byte ${p}`, file);
      const b = buf[p++]!;
      v += (b & 0x7f) * mul;
      if (b < 0x80) return v;
      mul *= 128;
    }
  };
  while (p < buf.length) {
    const key = varint();
    const f: Field = { no: Math.floor(key / 8), wire: key % 8 };
    if (f.wire === 0) f.int = varint();
    else if (f.wire === 5) {
      if (p + 4 > buf.length) throw new SlowTokenizerError(`${file}: truncated protobuf fixed32 at byte ${p}`, file);
      f.f32 = new DataView(buf.buffer, buf.byteOffset + p, 4).getFloat32(0, true);
      p += 4;
    } else if (f.wire === 1) p += 8;
    else if (f.wire === 2) {
      const n = varint();
      if (p + n > buf.length) throw new SlowTokenizerError(`${file}: protobuf field ${f.no} of ${n} bytes runs past the end of the file`, file);
      f.bytes = buf.subarray(p, p + n);
      p += n;
    } else throw new SlowTokenizerError(`${file}: protobuf wire type ${f.wire} at byte ${p} is not a SentencePiece model field`, file);
    out.push(f);
  }
  return out;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

interface SentencePieceModel {
  pieces: { piece: string; score: number; type: number }[];
  /** 1 unigram, 2 BPE, 3 word, 4 char */
  modelType: number;
  unkId: number;
  byteFallback: boolean;
  precompiledCharsmap: Uint8Array;
  addDummyPrefix: boolean;
}

/** sentencepiece_model.proto: ModelProto { pieces = 1, trainer_spec = 2, normalizer_spec = 3 } */
export function readSentencePiece(file: string): SentencePieceModel {
  const buf = new Uint8Array(fs.readFileSync(file));
  const m: SentencePieceModel = { pieces: [], modelType: 1, unkId: 0, byteFallback: false, precompiledCharsmap: new Uint8Array(0), addDummyPrefix: true };
  for (const f of fields(buf, file)) {
    if (f.no === 1 && f.bytes) {
      const sp = { piece: '', score: 0, type: 1 };
      for (const g of fields(f.bytes, file)) {
        if (g.no === 1 && g.bytes) sp.piece = utf8.decode(g.bytes);
        else if (g.no === 2 && g.f32 !== undefined) sp.score = g.f32;
        else if (g.no === 3 && g.int !== undefined) sp.type = g.int;
      }
      m.pieces.push(sp);
    } else if (f.no === 2 && f.bytes) {
      for (const g of fields(f.bytes, file)) {
        if (g.no === 3 && g.int !== undefined) m.modelType = g.int;
        else if (g.no === 40 && g.int !== undefined) m.unkId = g.int;
        else if (g.no === 35 && g.int !== undefined) m.byteFallback = g.int !== 0;
      }
    } else if (f.no === 3 && f.bytes) {
      for (const g of fields(f.bytes, file)) {
        if (g.no === 2 && g.bytes) m.precompiledCharsmap = g.bytes;
        else if (g.no === 3 && g.int !== undefined) m.addDummyPrefix = g.int !== 0;
      }
    }
  }
  if (m.pieces.length === 0) throw new SlowTokenizerError(`${file}: not a SentencePiece model (no pieces)`, file);
  return m;
}

const special = (id: number, content: string) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });

function tokenName(v: unknown): string | undefined {
  return typeof v === 'string' ? v : (v as { content?: string } | undefined)?.content;
}

/**
 * transformers' T5Converter: a Unigram over the pieces then `extra_ids` sentinels `<extra_id_{n-1}> ..
 * <extra_id_0>`, the charsmap normalizer, whitespace split + Metaspace, `$A </s>`.
 */
export function t5TokenizerJson(spieceFile: string, config: Record<string, unknown>): Record<string, unknown> {
  const sp = readSentencePiece(spieceFile);
  if (sp.modelType !== 1) throw new SlowTokenizerError(`${spieceFile}: SentencePiece model type ${sp.modelType} is not a unigram model (T5 / UMT5 tokenizers are unigram)`, spieceFile);
  const extra = typeof config.extra_ids === 'number' ? config.extra_ids : 100;
  const vocab: [string, number][] = sp.pieces.map((p) => [p.piece, p.score]);
  for (let k = extra - 1; k >= 0; k--) vocab.push([`<extra_id_${k}>`, 0]);
  const eos = tokenName(config.eos_token) ?? '</s>';
  const eosId = vocab.findIndex(([p]) => p === eos);
  if (eosId < 0) throw new SlowTokenizerError(`${spieceFile}: the eos token ${JSON.stringify(eos)} is not a piece of the model`, spieceFile);
  // SentencePiece's control / unknown pieces and the sentinels are special tokens
  const added = sp.pieces.flatMap((p, id) => (p.type === 2 || p.type === 3 ? [special(id, p.piece)] : []));
  for (let k = 0; k < extra; k++) added.push(special(sp.pieces.length + k, vocab[sp.pieces.length + k]![0]));
  const metaspace = { type: 'Metaspace', replacement: '\u2581', prepend_scheme: sp.addDummyPrefix ? 'always' : 'never', split: true };
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: sp.precompiledCharsmap.length ? { type: 'Precompiled', precompiled_charsmap: Buffer.from(sp.precompiledCharsmap).toString('base64') } : null,
    pre_tokenizer: { type: 'Sequence', pretokenizers: [{ type: 'WhitespaceSplit' }, metaspace] },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: eos, type_id: 0 } }],
      pair: [{ Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: eos, type_id: 0 } }, { Sequence: { id: 'B', type_id: 0 } }, { SpecialToken: { id: eos, type_id: 0 } }],
      special_tokens: { [eos]: { id: eos, ids: [eosId], tokens: [eos] } },
    },
    decoder: metaspace,
    model: { type: 'Unigram', unk_id: sp.unkId, vocab, byte_fallback: sp.byteFallback },
  };
}

/** transformers' CLIPConverter: NFC + whitespace + lowercase, CLIP's split regex + byte-level BPE with `</w>` */
export function clipTokenizerJson(vocabFile: string, mergesFile: string, config: Record<string, unknown>): Record<string, unknown> {
  const { vocab, merges } = readBpe(vocabFile, mergesFile);
  const bos = tokenName(config.bos_token) ?? '<|startoftext|>';
  const eos = tokenName(config.eos_token) ?? '<|endoftext|>';
  const unk = tokenName(config.unk_token) ?? eos;
  for (const [t, what] of [[bos, 'bos_token'], [eos, 'eos_token']] as const) {
    if (vocab[t] === undefined) throw new SlowTokenizerError(`${vocabFile}: the ${what} ${JSON.stringify(t)} is not in the vocabulary`, vocabFile);
  }
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [...new Set([bos, eos])].map((t) => special(vocab[t]!, t)),
    normalizer: { type: 'Sequence', normalizers: [{ type: 'NFC' }, { type: 'Replace', pattern: { Regex: '\\s+' }, content: ' ' }, { type: 'Lowercase' }] },
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+" }, behavior: 'Removed', invert: true },
        byteLevel,
      ],
    },
    post_processor: { type: 'RobertaProcessing', sep: [eos, vocab[eos]], cls: [bos, vocab[bos]], trim_offsets: false, add_prefix_space: false },
    decoder: { ...byteLevel, add_prefix_space: true },
    model: { type: 'BPE', dropout: null, unk_token: unk, continuing_subword_prefix: '', end_of_word_suffix: '</w>', fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges },
  };
}

/** the BPE vocabulary and merges of a slow tokenizer folder (vocab.json + merges.txt) */
function readBpe(vocabFile: string, mergesFile: string): { vocab: Record<string, number>; merges: [string, string][] } {
  let vocab: Record<string, number>;
  try {
    vocab = JSON.parse(fs.readFileSync(vocabFile, 'utf8')) as Record<string, number>;
  } catch (e) {
    throw new SlowTokenizerError(`${vocabFile}: not valid JSON (${(e as Error).message})`, vocabFile);
  }
  const merges = fs
    .readFileSync(mergesFile, 'utf8')
    .split('\n')
    .map((l, i) => [l, i] as const)
    .filter(([l, i]) => l.trim() !== '' && !(i === 0 && l.startsWith('#version')))
    .map(([l, i]) => {
      const pair = l.split(' ');
      if (pair.length !== 2) throw new SlowTokenizerError(`${mergesFile}: line ${i + 1} is not a merge "a b": ${JSON.stringify(l)}`, mergesFile);
      return pair as [string, string];
    });
  return { vocab, merges };
}

/**
 * transformers' Qwen2Converter: NFC, Qwen's split regex + byte-level BPE, no special tokens added around the
 * text; the added tokens (`<|endoftext|>`, `<|im_start|>`, ...) from tokenizer_config.json's added_tokens_decoder.
 */
export function qwen2TokenizerJson(vocabFile: string, mergesFile: string, config: Record<string, unknown>, configFile: string): Record<string, unknown> {
  const { vocab, merges } = readBpe(vocabFile, mergesFile);
  const decoder = config.added_tokens_decoder;
  if (!decoder || typeof decoder !== 'object') throw new SlowTokenizerError(`${configFile}: field "added_tokens_decoder" (the special tokens) is missing`, configFile);
  const added = Object.entries(decoder as Record<string, { content: string; special?: boolean; lstrip?: boolean; rstrip?: boolean; normalized?: boolean; single_word?: boolean }>)
    .map(([id, t]) => ({ id: Number(id), content: t.content, single_word: t.single_word ?? false, lstrip: t.lstrip ?? false, rstrip: t.rstrip ?? false, normalized: t.normalized ?? false, special: t.special ?? true }))
    .sort((a, b) => a.id - b.id);
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: { type: 'NFC' },
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+" }, behavior: 'Isolated', invert: false },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: { type: 'TemplateProcessing', single: [{ Sequence: { id: 'A', type_id: 0 } }], pair: [{ Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }], special_tokens: {} },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '', fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges },
  };
}

/**
 * The tokenizer.json of a directory that has only slow files, by its tokenizer_config.json class:
 * T5Tokenizer (spiece.model), CLIPTokenizer or Qwen2Tokenizer (vocab.json + merges.txt); null when none applies.
 */
export function tokenizerJsonFromSlowFiles(dir: string, config: Record<string, unknown>): Record<string, unknown> | null {
  const cls = typeof config.tokenizer_class === 'string' ? config.tokenizer_class : '';
  const spiece = path.join(dir, 'spiece.model');
  const vocab = path.join(dir, 'vocab.json');
  const merges = path.join(dir, 'merges.txt');
  if (fs.existsSync(spiece) && (cls === '' || /^(T5|UMT5|MT5)Tokenizer(Fast)?$/.test(cls))) return t5TokenizerJson(spiece, config);
  if (fs.existsSync(vocab) && fs.existsSync(merges) && (cls === '' || /^CLIPTokenizer(Fast)?$/.test(cls))) return clipTokenizerJson(vocab, merges, config);
  if (fs.existsSync(vocab) && fs.existsSync(merges) && /^Qwen2Tokenizer(Fast)?$/.test(cls)) return qwen2TokenizerJson(vocab, merges, config, path.join(dir, 'tokenizer_config.json'));
  return null;
}
