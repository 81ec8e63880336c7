// The server's LoRA state, as SGLang Diffusion and vLLM-Omni expose it: adapters registered by nickname
// (`--lora-path` at start, POST /v1/set_lora), the set in effect for requests that name none, merged or not
// (POST /v1/merge_lora_weights / unmerge_lora_weights), and a request's own adapters (vLLM-Omni's
// `lora: {name, path, scale}`), which apply to that request only. Adapters are always fused into the weights:
// a switch re-fuses the weights the old or the new adapters touch, between generations (runtime/lora.ts).
import path from 'node:path';
import type { LoraSpec } from '../lora.ts';
import { UserError } from '../model-dir.ts';
import type { ServedPipeline } from './ranks.ts';

interface Registered extends LoraSpec {
  nickname: string;
}

/** a request's `lora` field as the schema admits it */
export interface LoraRequest {
  name?: string;
  lora_name?: string;
  path?: string;
  lora_path?: string;
  scale?: number;
  int_id?: number;
}

export interface SetLoraBody {
  lora_nickname: string | string[];
  lora_path?: string | string[];
  target?: 'all' | 'transformer' | 'transformer_2';
  strength?: number | number[];
  merge_mode?: 'auto' | 'merge' | 'dynamic';
}

const nicknameOf = (file: string): string => path.basename(file).replace(/\.safetensors$/, '');

export class ServerLoras {
  private readonly registered = new Map<string, Registered>();
  private active: string[] = [];
  private merged = true;

  constructor(
    private readonly pipe: Pick<ServedPipeline, 'loraLibrary' | 'setLoras' | 'fuseLora'>,
    initial: (LoraSpec & { nickname?: string })[],
  ) {
    for (const l of initial) {
      const r = { ...l, nickname: l.nickname ?? nicknameOf(l.path) };
      this.registered.set(r.nickname, r);
      this.active.push(r.nickname);
    }
  }

  /** the adapters of requests that name none */
  inEffect(): LoraSpec[] {
    return this.merged ? this.active.map((n) => this.spec(this.registered.get(n)!)) : [];
  }

  private spec(r: Registered): LoraSpec {
    return { path: r.path, ...(r.scale !== undefined ? { scale: r.scale } : {}), ...(r.target ? { target: r.target } : {}) };
  }

  /** a request's `lora` as adapters (its file read now, so a bad path is a 400 before the request queues) */
  ofRequest(v: LoraRequest | LoraRequest[] | undefined): LoraSpec[] | undefined {
    if (v === undefined) return undefined;
    return [v].flat().map((l, i) => {
      const at = Array.isArray(v) ? `lora[${i}]` : 'lora';
      const file = l.path ?? l.lora_path;
      const name = l.name ?? l.lora_name;
      let spec: LoraSpec;
      if (file !== undefined) spec = { path: file };
      else if (name !== undefined) {
        const r = this.registered.get(name);
        if (!r) throw new UserError(`${at}.name: no LoRA named "${name}" (registered: ${[...this.registered.keys()].join(', ') || 'none'}); give ${at}.path, or register it with POST /v1/set_lora`);
        spec = this.spec(r);
      } else throw new UserError(`${at}: give path (a LoRA .safetensors) or the name of one registered by /v1/set_lora`);
      if (l.scale !== undefined) spec.scale = l.scale;
      try {
        this.pipe.loraLibrary.get(spec.path);
      } catch (e) {
        throw new UserError(`${at}.path: ${(e as Error).message}`);
      }
      return spec;
    });
  }

  /** SGLang's set_lora: registers the nicknames (with their paths) and puts them in effect, merged; on an error nothing changes */
  async set(b: SetLoraBody): Promise<void> {
    const names = [b.lora_nickname].flat();
    const paths = b.lora_path === undefined ? [] : [b.lora_path].flat();
    const strengths = b.strength === undefined ? [] : [b.strength].flat();
    // the server runs its LoRAs one way: fused into the weights, or unfused (serve --disable-fuse-lora) as branches
    if (b.merge_mode === 'dynamic' && this.pipe.fuseLora) throw new UserError('merge_mode: "dynamic" (an unfused LoRA branch per forward): this server fuses its LoRAs into the weights (auto | merge); start it with --disable-fuse-lora for branches');
    if (b.merge_mode === 'merge' && !this.pipe.fuseLora) throw new UserError('merge_mode: "merge": this server runs its LoRAs unfused (--disable-fuse-lora), as branches beside the base weights (auto | dynamic)');
    if (paths.length && paths.length !== names.length) throw new UserError(`lora_path: ${paths.length} paths for ${names.length} nicknames`);
    if (strengths.length > 1 && strengths.length !== names.length) throw new UserError(`strength: ${strengths.length} values for ${names.length} nicknames`);
    const next = names.map((nickname, i): Registered => {
      const known = this.registered.get(nickname);
      const file = paths[i] ?? known?.path;
      if (file === undefined) throw new UserError(`lora_path: "${nickname}" is not registered yet; give its lora_path`);
      const scale = strengths.length ? strengths[strengths.length > 1 ? i : 0] : known?.scale;
      const target = b.target ?? known?.target;
      return { nickname, path: file, ...(scale !== undefined ? { scale } : {}), ...(target ? { target } : {}) };
    });
    await this.pipe.setLoras(next.map((r) => this.spec(r)));
    for (const r of next) this.registered.set(r.nickname, r);
    this.active = next.map((r) => r.nickname);
    this.merged = true;
  }

  /** merge (true) or unmerge (false) the adapters in effect: unmerged, requests run the checkpoint's own weights */
  async merge(on: boolean): Promise<void> {
    if (!this.active.length) throw new UserError(`no LoRA is set to ${on ? 'merge' : 'unmerge'} (POST /v1/set_lora first)`);
    await this.pipe.setLoras(on ? this.active.map((n) => this.spec(this.registered.get(n)!)) : []);
    this.merged = on;
  }

  list(): { loras: Record<string, unknown>[]; loaded: string[] } {
    return {
      loras: [...this.registered.values()].map((r) => ({
        lora_nickname: r.nickname,
        lora_path: r.path,
        strength: r.scale ?? 1,
        target: r.target ?? 'all',
        active: this.active.includes(r.nickname),
        merged: this.active.includes(r.nickname) && this.merged,
      })),
      loaded: this.pipe.loraLibrary.loaded(),
    };
  }
}
