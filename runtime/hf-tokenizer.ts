// A Hugging Face tokenizer from a component directory's own `tokenizer.json` (+ `tokenizer_config.json`; a
// directory with only the slow files gets the tokenizer.json transformers would convert them to),
// through the kept library @huggingface/tokenizers (CLIP byte-level BPE, T5 / UMT5 unigram, Qwen2 BPE, ...),
// with the padding and truncation a diffusers pipeline asks for: `padding="max_length",
// max_length=L, truncation=True` (the content is cut so the special tokens still fit, as the Rust
// tokenizers' single-sequence truncation does), right padding with the pad token.
import fs from 'node:fs';
import path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { tokenizerJsonFromSlowFiles, type SlowTokenizerError } from './tokenizers/slow-files.ts';

export class TokenizerError extends Error {
  constructor(message: string, readonly file: string) {
    super(message);
    this.name = 'TokenizerError';
  }
}

export interface PaddedTokens {
  /** token ids, length maxLength */
  ids: number[];
  /** 1 = token, 0 = padding */
  attentionMask: number[];
  /** tokens of the prompt before truncation (with special tokens) */
  untruncatedLength: number;
}

function readJson(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new TokenizerError(`${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, file);
  }
  try {
    const v = JSON.parse(text) as unknown;
    if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error('not a JSON object');
    return v as Record<string, unknown>;
  } catch (e) {
    throw new TokenizerError(`${file}: not valid JSON (${(e as Error).message})`, file);
  }
}

export class HfTokenizer {
  private readonly tok: Tokenizer;
  /** number of special tokens the post-processor puts before / after the content */
  private readonly prefix: number;
  private readonly suffix: number;
  readonly padId: number;
  /** `model_max_length` of tokenizer_config.json (null when unset or huge) */
  readonly modelMaxLength: number | null;

  constructor(
    readonly dir: string,
    tokenizerJson: Record<string, unknown>,
    config: Record<string, unknown>,
  ) {
    const file = path.join(dir, 'tokenizer.json');
    try {
      this.tok = new Tokenizer(tokenizerJson, config);
    } catch (e) {
      throw new TokenizerError(`${file}: cannot build the tokenizer (${(e as Error).message})`, file);
    }
    // where the post-processor adds special tokens: compare a probe with and without them
    const bare = this.tok.encode('a', { add_special_tokens: false }).ids;
    const full = this.tok.encode('a', { add_special_tokens: true }).ids;
    let p = 0;
    while (p < full.length && full.slice(p, p + bare.length).join() !== bare.join()) p++;
    if (p === full.length && bare.length > 0) throw new TokenizerError(`${file}: the post-processor does not keep the content tokens in order`, file);
    this.prefix = p;
    this.suffix = full.length - p - bare.length;
    const padTok = typeof config.pad_token === 'string' ? config.pad_token : (config.pad_token as { content?: string } | undefined)?.content;
    const padId = padTok !== undefined ? this.tok.token_to_id(padTok) : undefined;
    if (padId === undefined) {
      throw new TokenizerError(`${path.join(dir, 'tokenizer_config.json')}: field "pad_token" must name a token of the vocabulary, got ${JSON.stringify(config.pad_token)}`, path.join(dir, 'tokenizer_config.json'));
    }
    this.padId = padId;
    const mml = config.model_max_length;
    this.modelMaxLength = typeof mml === 'number' && Number.isInteger(mml) && mml > 0 && mml < 1e9 ? mml : null;
  }

  /** Reads `tokenizer.json` and `tokenizer_config.json` of a tokenizer directory. */
  static fromDir(dir: string): HfTokenizer {
    const tj = path.join(dir, 'tokenizer.json');
    const cfgFile = path.join(dir, 'tokenizer_config.json');
    const config = fs.existsSync(cfgFile) ? readJson(cfgFile) : {};
    if (fs.existsSync(tj)) return new HfTokenizer(dir, readJson(tj), config);
    // only the slow files: the tokenizer.json transformers' converter would build from them
    let converted: Record<string, unknown> | null;
    try {
      converted = tokenizerJsonFromSlowFiles(dir, config);
    } catch (e) {
      throw new TokenizerError((e as Error).message, (e as SlowTokenizerError).file ?? dir);
    }
    if (!converted) {
      throw new TokenizerError(
        `${tj}: missing, and no slow files ditforge converts for tokenizer_class ${JSON.stringify(config.tokenizer_class ?? null)} (it reads tokenizer.json, or spiece.model for T5 / UMT5, or vocab.json + merges.txt for CLIP)`,
        tj,
      );
    }
    return new HfTokenizer(dir, converted, config);
  }

  /** `tokenizer(text, padding="max_length", max_length=L, truncation=True)` */
  encode(text: string, maxLength: number): PaddedTokens {
    const full = this.tok.encode(text, { add_special_tokens: true }).ids;
    let ids = full;
    if (full.length > maxLength) {
      const room = maxLength - this.prefix - this.suffix;
      if (room < 0) throw new TokenizerError(`${this.dir}: max_length ${maxLength} leaves no room for the ${this.prefix + this.suffix} special tokens`, this.dir);
      ids = [...full.slice(0, this.prefix + room), ...full.slice(full.length - this.suffix)];
    }
    const pad = maxLength - ids.length;
    return {
      ids: [...ids, ...new Array<number>(pad).fill(this.padId)],
      attentionMask: [...new Array<number>(ids.length).fill(1), ...new Array<number>(pad).fill(0)],
      untruncatedLength: full.length,
    };
  }

  /** `tokenizer(text, max_length=L, truncation=True)` without padding (the ids, with special tokens) */
  encodeTruncated(text: string, maxLength: number): number[] {
    const full = this.tok.encode(text, { add_special_tokens: true }).ids;
    if (full.length <= maxLength) return full;
    return [...full.slice(0, this.prefix + maxLength - this.prefix - this.suffix), ...full.slice(full.length - this.suffix)];
  }

  tokenToId(token: string): number | undefined {
    return this.tok.token_to_id(token);
  }
}
