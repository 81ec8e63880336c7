// A model directory as diffusers lays it out: `model_index.json` names the pipeline class and its
// components; each component folder holds its `config.json` (or `scheduler_config.json`) and weights.
// This file maps the pipeline class to the family the runtime runs it as, and reads the configs
// (every error names the file and the field).
import fs from 'node:fs';
import path from 'node:path';
import type { Component } from './plan.ts';

/** An error caused by the user's input (bad flag value, bad file): the CLI prints only its message. */
export class UserError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UserError';
  }
}

/** How the runtime runs a pipeline class. */
export interface PipelineFamily {
  /** diffusers pipeline class (model_index.json `_class_name`) */
  pipelineClass: string;
  /** registered compiler model whose components the plans come from */
  planModel: string;
  /** components whose config.json from the directory overrides the model file's defaults */
  dirConfigs: readonly Component[];
  /** the text stack: the tiny model's word tokenizer + encoder, FluxPipeline's CLIP (pooled) + T5, WanPipeline's UMT5, QwenImagePipeline's Qwen2.5-VL, ZImagePipeline's Qwen3 */
  text: 'tiny' | 'clip_t5' | 'umt5' | 'qwen2_5_vl' | 'qwen3';
  /** what the pipeline makes: images (runtime/pipeline.ts) or videos (runtime/pipelines/wan.ts) */
  output: 'image' | 'video';
  /** the components model_index.json must name, with the classes we run */
  components: Partial<Record<string, readonly string[]>>;
  /** components it may name (Wan 2.2's transformer_2), with the classes we run */
  optionalComponents?: Partial<Record<string, readonly string[]>>;
}

export const TINY_FLUX_FAMILY: PipelineFamily = {
  pipelineClass: 'FluxPipeline',
  planModel: 'tiny-flux',
  dirConfigs: [],
  text: 'tiny',
  output: 'image',
  components: {},
};

/** diffusers FluxPipeline (FLUX.1-dev / -schnell and their fine-tunes) */
export const FLUX1_FAMILY: PipelineFamily = {
  pipelineClass: 'FluxPipeline',
  planModel: 'flux1-dev',
  dirConfigs: ['transformer', 'text_encoder', 'text_encoder_2', 'vae'],
  text: 'clip_t5',
  output: 'image',
  components: {
    transformer: ['FluxTransformer2DModel'],
    text_encoder: ['CLIPTextModel'],
    text_encoder_2: ['T5EncoderModel'],
    tokenizer: ['CLIPTokenizer', 'CLIPTokenizerFast'],
    tokenizer_2: ['T5TokenizerFast', 'T5Tokenizer'],
    vae: ['AutoencoderKL'],
    scheduler: ['FlowMatchEulerDiscreteScheduler'],
  },
};

/** diffusers WanPipeline (Wan 2.1 text-to-video, 1.3B and 14B; Wan 2.2 A14B with its second expert) */
export const WAN21_FAMILY: PipelineFamily = {
  pipelineClass: 'WanPipeline',
  planModel: 'wan2.1-t2v-1.3b',
  dirConfigs: ['transformer', 'text_encoder', 'vae'],
  text: 'umt5',
  output: 'video',
  components: {
    transformer: ['WanTransformer3DModel'],
    text_encoder: ['UMT5EncoderModel'],
    tokenizer: ['T5TokenizerFast', 'T5Tokenizer'],
    vae: ['AutoencoderKLWan'],
    scheduler: ['UniPCMultistepScheduler'],
  },
  // Wan 2.2 A14B: the low-noise expert
  optionalComponents: { transformer_2: ['WanTransformer3DModel'] },
};

/** diffusers QwenImagePipeline (Qwen-Image text-to-image) */
export const QWEN_IMAGE_FAMILY: PipelineFamily = {
  pipelineClass: 'QwenImagePipeline',
  planModel: 'qwen-image',
  dirConfigs: ['transformer', 'text_encoder', 'vae'],
  text: 'qwen2_5_vl',
  output: 'image',
  components: {
    transformer: ['QwenImageTransformer2DModel'],
    text_encoder: ['Qwen2_5_VLForConditionalGeneration'],
    tokenizer: ['Qwen2Tokenizer', 'Qwen2TokenizerFast'],
    vae: ['AutoencoderKLQwenImage'],
    scheduler: ['FlowMatchEulerDiscreteScheduler'],
  },
};

/** diffusers ZImagePipeline (Z-Image / Z-Image-Turbo text-to-image) */
export const Z_IMAGE_FAMILY: PipelineFamily = {
  pipelineClass: 'ZImagePipeline',
  planModel: 'z-image-turbo',
  dirConfigs: ['transformer', 'text_encoder', 'vae'],
  text: 'qwen3',
  output: 'image',
  components: {
    transformer: ['ZImageTransformer2DModel'],
    text_encoder: ['Qwen3Model'],
    tokenizer: ['Qwen2Tokenizer', 'Qwen2TokenizerFast'],
    vae: ['AutoencoderKL'],
    scheduler: ['FlowMatchEulerDiscreteScheduler'],
  },
};

/** diffusers Flux2KleinPipeline (FLUX.2-Klein 4B / 9B, base and distilled): Qwen3, the FLUX.2 transformer, AutoencoderKLFlux2 */
export const FLUX2_KLEIN_FAMILY: PipelineFamily = {
  pipelineClass: 'Flux2KleinPipeline',
  planModel: 'flux2-klein-4b',
  dirConfigs: ['transformer', 'text_encoder', 'vae'],
  text: 'qwen3',
  output: 'image',
  components: {
    transformer: ['Flux2Transformer2DModel'],
    text_encoder: ['Qwen3ForCausalLM'],
    tokenizer: ['Qwen2Tokenizer', 'Qwen2TokenizerFast'],
    vae: ['AutoencoderKLFlux2'],
    scheduler: ['FlowMatchEulerDiscreteScheduler'],
  },
};

/** diffusers OvisImagePipeline (Ovis-Image 7B): Qwen3, the Ovis-Image transformer, FLUX.1's AutoencoderKL */
export const OVIS_IMAGE_FAMILY: PipelineFamily = {
  pipelineClass: 'OvisImagePipeline',
  planModel: 'ovis-image',
  dirConfigs: ['transformer', 'text_encoder', 'vae'],
  text: 'qwen3',
  output: 'image',
  components: {
    transformer: ['OvisImageTransformer2DModel'],
    text_encoder: ['Qwen3Model'],
    tokenizer: ['Qwen2Tokenizer', 'Qwen2TokenizerFast'],
    vae: ['AutoencoderKL'],
    scheduler: ['FlowMatchEulerDiscreteScheduler'],
  },
};

/** diffusers FluxFillPipeline (FLUX.1-Fill-dev): FLUX.1's components, a transformer taking the masked image and mask too */
export const FLUX1_FILL_FAMILY: PipelineFamily = { ...FLUX1_FAMILY, pipelineClass: 'FluxFillPipeline', planModel: 'flux1-fill' };

/** the families the FLUX spec runs (tiny-flux, FluxPipeline, FluxFillPipeline) */
export function isFluxFamily(f: PipelineFamily): boolean {
  return f.text === 'tiny' || f.text === 'clip_t5';
}

const FAMILIES = [FLUX1_FAMILY, FLUX1_FILL_FAMILY, WAN21_FAMILY, QWEN_IMAGE_FAMILY, Z_IMAGE_FAMILY, FLUX2_KLEIN_FAMILY, OVIS_IMAGE_FAMILY];

export function readJson(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new UserError(`${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new UserError(`${file}: not valid JSON (${(e as Error).message})`);
  }
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new UserError(`${file}: expected a JSON object`);
  return v as Record<string, unknown>;
}

/** the family of a directory, from its model_index.json (checked component by component) */
export function familyOf(dir: string): PipelineFamily {
  const file = path.join(dir, 'model_index.json');
  const idx = readJson(file);
  const te = idx.text_encoder as unknown;
  if (Array.isArray(te) && te[0] === 'tiny_flux') return TINY_FLUX_FAMILY;
  const cls = idx._class_name;
  const fam = FAMILIES.find((f) => f.pipelineClass === cls);
  if (!fam) throw new UserError(`${file}: _class_name ${JSON.stringify(cls)} is not a supported pipeline (supported: ${FAMILIES.map((f) => f.pipelineClass).join(', ')})`);
  const optional = Object.entries(fam.optionalComponents ?? {}).filter(([c]) => idx[c] !== undefined && idx[c] !== null && !(Array.isArray(idx[c]) && (idx[c] as unknown[])[1] === null));
  for (const [comp, classes] of [...Object.entries(fam.components), ...optional]) {
    const entry = idx[comp];
    if (!Array.isArray(entry) || entry.length !== 2 || typeof entry[1] !== 'string') {
      throw new UserError(`${file}: field "${comp}" must be [library, class] naming one of ${classes!.join(', ')}, got ${JSON.stringify(entry)}`);
    }
    if (!classes!.includes(entry[1])) throw new UserError(`${file}: ${comp} class ${entry[1]} is not supported by ${fam.pipelineClass} here (supported: ${classes!.join(', ')})`);
    if (!fs.existsSync(path.join(dir, comp))) throw new UserError(`${dir}: model_index.json names the component "${comp}" but the folder ${comp}/ is missing`);
  }
  return fam;
}

/** A component's config.json with the bookkeeping keys (`_class_name`, ...) removed. */
export function componentConfig(dir: string, component: string): Record<string, unknown> {
  const raw = readJson(path.join(dir, component, 'config.json'));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(raw)) if (!k.startsWith('_')) out[k] = v;
  return out;
}

/** a config field that must be a number (integer when `int`), named with its file when it is not */
export function configNumber(cfg: Record<string, unknown>, key: string, file: string, o: { int?: boolean; min?: number; fallback?: number } = {}): number {
  const v = cfg[key] ?? o.fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || (o.int && !Number.isInteger(v)) || (o.min !== undefined && v < o.min)) {
    throw new UserError(`${file}: field "${key}" must be ${o.int ? 'an integer' : 'a number'}${o.min !== undefined ? ` >= ${o.min}` : ''}, got ${JSON.stringify(cfg[key])}`);
  }
  return v;
}
