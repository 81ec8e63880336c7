// The tiny-flux word tokenizer (models/tiny-flux/README.md §1).
//   lower-case (Python str.lower) -> split on whitespace like Python str.split() -> vocab lookup (<unk> if
//   absent) -> no special tokens -> truncate to maxLength -> right-pad with <pad>.

import fs from 'node:fs';
import path from 'node:path';

/** Python's str.split() separators (str.isspace): ASCII whitespace, \x1c-\x1f, \x85, and Unicode spaces. */
const PY_WHITESPACE = /[\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/;

export interface TokenizerConfig {
  model_max_length?: number;
  pad_token_id?: number;
  unk_token_id?: number;
  pad_token?: string;
  unk_token?: string;
}

export interface Encoded {
  /** token ids, length maxLength */
  inputIds: number[];
  /** 1 = real token, 0 = pad */
  attentionMask: number[];
  /** the words after splitting (before truncation) */
  words: string[];
  /** words that were not in the vocabulary */
  unknown: string[];
}

export class WordTokenizer {
  readonly maxLength: number;
  readonly padId: number;
  readonly unkId: number;

  constructor(
    readonly vocab: Record<string, number>,
    config: TokenizerConfig = {},
  ) {
    this.maxLength = config.model_max_length ?? 12;
    this.padId = config.pad_token_id ?? vocab[config.pad_token ?? '<pad>'] ?? 0;
    this.unkId = config.unk_token_id ?? vocab[config.unk_token ?? '<unk>'] ?? 1;
  }

  static fromDir(dir: string): WordTokenizer {
    const vocabPath = path.join(dir, 'vocab.json');
    const cfgPath = path.join(dir, 'tokenizer_config.json');
    let vocab: Record<string, number>;
    try {
      vocab = JSON.parse(fs.readFileSync(vocabPath, 'utf8')) as Record<string, number>;
    } catch (e) {
      throw new Error(`${vocabPath}: cannot load the tokenizer vocabulary (${(e as Error).message})`);
    }
    const cfg = fs.existsSync(cfgPath) ? (JSON.parse(fs.readFileSync(cfgPath, 'utf8')) as TokenizerConfig) : {};
    return new WordTokenizer(vocab, cfg);
  }

  /** Python `text.lower().split()` */
  static split(text: string): string[] {
    return text
      .toLowerCase()
      .split(PY_WHITESPACE)
      .filter((w) => w.length > 0);
  }

  encode(text: string): Encoded {
    const words = WordTokenizer.split(text);
    const unknown: string[] = [];
    const ids = words.map((w) => {
      const id = Object.prototype.hasOwnProperty.call(this.vocab, w) ? this.vocab[w] : undefined;
      if (id === undefined) {
        unknown.push(w);
        return this.unkId;
      }
      return id;
    });
    const inputIds = ids.slice(0, this.maxLength);
    const attentionMask = inputIds.map(() => 1);
    while (inputIds.length < this.maxLength) {
      inputIds.push(this.padId);
      attentionMask.push(0);
    }
    return { inputIds, attentionMask, words, unknown };
  }
}
