// Compiles every shipped plan into generated/ and renders the kernel library.
//   tiny-flux: every component (the VAE's decoder and encoder) at default dims (plan.json + model.onnx, graph only)
//   flux1-dev: transformer at 1024x1024 / 512 text tokens, CLIP at 77 and T5 at 512 tokens (plan.json only:
//   a compile-only check, and the kernels a FLUX.1 directory's plans launch)
//   qwen-image: transformer and its Qwen2.5-VL text encoder at small dims (plan.json only) so every fused
//   kernel their plans launch is in the native library, at any size (kernels are size-generic)
//   wan2.1-t2v-1.3b: transformer, UMT5 and a VAE decoder chunk at small dims (plan.json only), likewise
//   gemma3-text: Gemma 3's text encoder at small dims (plan.json only), likewise
//   flux2-klein-4b, ovis-image, wan2.1-i2v-14b: the FLUX.2, Ovis-Image and Wan I2V transformers at small dims (plan.json only), likewise
//   z-image-turbo: transformer and its Qwen3 text encoder at small dims (plan.json only), likewise
// `--check`: compile into a temp dir and fail (exit 1, listing files) if generated/ differs.
import { PACKAGE_ROOT } from '../../runtime/package-root.ts';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runCompile, renderKernels, collectShippedPlans } from './commands.ts';

export async function compileShipped(outRoot: string): Promise<string[]> {
  const files: string[] = [];
  files.push(...(await runCompile('tiny-flux', { out: outRoot, kernels: false, quiet: true })));
  files.push(
    ...(await runCompile('flux1-dev', {
      out: outRoot,
      kernels: false,
      quiet: true,
      onnx: false,
      components: ['transformer', 'text_encoder', 'text_encoder_2'],
      dims: { transformer: { batch: 1, height: 1024, width: 1024, textTokens: 512 }, text_encoder: { batch: 1, textTokens: 77 }, text_encoder_2: { batch: 1, textTokens: 512 } },
    })),
  );
  files.push(
    ...(await runCompile('qwen-image', {
      out: outRoot,
      kernels: false,
      quiet: true,
      onnx: false,
      components: ['transformer', 'text_encoder'],
      dims: { transformer: { batch: 1, height: 256, width: 256, textTokens: 32 }, text_encoder: { batch: 1, textTokens: 16 } },
    })),
  );
  files.push(
    ...(await runCompile('wan2.1-t2v-1.3b', {
      out: outRoot,
      kernels: false,
      quiet: true,
      onnx: false,
      components: ['transformer', 'text_encoder', 'vae'],
      dims: { transformer: { batch: 1, frames: 5, height: 128, width: 128, textTokens: 32 }, text_encoder: { batch: 1, textTokens: 32 }, vae: { batch: 1, height: 64, width: 64, chunk: 2 } },
    })),
  );
  files.push(
    ...(await runCompile('z-image-turbo', {
      out: outRoot,
      kernels: false,
      quiet: true,
      onnx: false,
      components: ['transformer', 'text_encoder'],
      dims: { transformer: { batch: 1, height: 256, width: 256, textTokens: 32 }, text_encoder: { batch: 1, textTokens: 16 } },
    })),
  );
  files.push(
    ...(await runCompile('flux2-klein-4b', { out: outRoot, kernels: false, quiet: true, onnx: false, components: ['transformer'], dims: { transformer: { batch: 1, height: 256, width: 256, textTokens: 32 } } })),
  );
  files.push(...(await runCompile('wan2.1-i2v-14b', { out: outRoot, kernels: false, quiet: true, onnx: false, components: ['transformer'], dims: { transformer: { batch: 1, frames: 5, height: 64, width: 64, textTokens: 16, imageEmbedTokens: 9 } } })));
  files.push(...(await runCompile('ovis-image', { out: outRoot, kernels: false, quiet: true, onnx: false, components: ['transformer'], dims: { transformer: { batch: 1, height: 256, width: 256, textTokens: 32 } } })));
  files.push(...(await runCompile('gemma3-text', { out: outRoot, kernels: false, quiet: true, onnx: false, dims: { text_encoder: { batch: 1, textTokens: 16 } } })));
  const plans = collectShippedPlans(outRoot);
  files.push(...(await renderKernels(plans, path.join(outRoot, 'kernels', 'cpu'))));
  return files;
}

function listTree(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...listTree(p));
    else out.push(p);
  }
  return out;
}

async function main(): Promise<number> {
  const check = process.argv.includes('--check');
  const generated = path.join(PACKAGE_ROOT, 'generated');
  if (!check) {
    const files = await compileShipped(generated);
    process.stdout.write(`compiled ${files.length} files into ${path.relative(process.cwd(), generated) || generated}\n`);
    return 0;
  }
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ditforge-check-'));
  try {
    const files = await compileShipped(tmp);
    const rels = new Set(files.map((f) => path.relative(tmp, f)));
    const bad: string[] = [];
    for (const rel of [...rels].sort()) {
      const a = path.join(tmp, rel);
      const b = path.join(generated, rel);
      if (!fs.existsSync(b)) bad.push(`${rel} (missing in generated/)`);
      else if (!fs.readFileSync(a).equals(fs.readFileSync(b))) bad.push(`${rel} (stale)`);
    }
    // files the compiler owns that it no longer produces
    for (const top of ['tiny-flux', 'flux1-dev', 'qwen-image', 'wan2.1-t2v-1.3b']) {
      for (const f of listTree(path.join(generated, top))) {
        const rel = path.relative(generated, f);
        if (!rels.has(rel)) bad.push(`${rel} (not produced any more)`);
      }
    }
    if (bad.length) {
      process.stderr.write(`generated/ is out of date (run npm run compile:shipped):\n${bad.map((b) => `  ${b}`).join('\n')}\n`);
      return 1;
    }
    process.stdout.write(`generated/ is up to date (${rels.size} files)\n`);
    return 0;
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith('compile-shipped.ts')) {
  main().then(
    (rc) => process.exit(rc),
    (e: unknown) => {
      process.stderr.write(`error: ${(e as Error).message}\n`);
      process.exit(1);
    },
  );
}
