// Renders generated/kernels/{cpu,cuda} with the elementwise chains of every shipped plan
// (generated/**/plan.json, top-level `elementwise`). Usage: npx tsx compiler/cli/render-kernels.ts [--root DIR] [--quiet]
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { renderKernelLibrary, type ElementwiseKernelSpec } from '../codegen/kernels.ts';

const here = dirname(fileURLToPath(import.meta.url));

function findPlans(dir: string, out: string[] = []): string[] {
  if (!existsSync(dir)) return out;
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    const st = statSync(p);
    if (st.isDirectory()) {
      if (name !== 'kernels' && name !== 'node_modules') findPlans(p, out);
    } else if (name === 'plan.json') {
      out.push(p);
    }
  }
  return out;
}

export function collectElementwise(generatedDir: string): { specs: ElementwiseKernelSpec[]; plans: string[] } {
  const plans = findPlans(generatedDir);
  const specs: ElementwiseKernelSpec[] = [];
  for (const p of plans) {
    let plan: { elementwise?: unknown };
    try {
      plan = JSON.parse(readFileSync(p, 'utf8'));
    } catch (e) {
      throw new Error(`${p}: ${(e as Error).message}`);
    }
    if (plan.elementwise === undefined) continue;
    if (!Array.isArray(plan.elementwise)) throw new Error(`${p}: 'elementwise' must be an array`);
    for (const s of plan.elementwise as ElementwiseKernelSpec[]) specs.push({ name: s.name, arity: s.arity, expr: s.expr });
  }
  return { specs, plans };
}

export function renderShippedKernels(root = resolve(here, '..', '..')): string[] {
  const generated = join(root, 'generated');
  const { specs } = collectElementwise(generated);
  return renderKernelLibrary({ elementwise: specs, outDir: join(generated, 'kernels', 'cpu') });
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const k = process.argv.indexOf('--root');
  const root = k > 0 ? resolve(process.argv[k + 1]) : resolve(here, '..', '..');
  try {
    const { specs, plans } = collectElementwise(join(root, 'generated'));
    const files = renderKernelLibrary({ elementwise: specs, outDir: join(root, 'generated', 'kernels', 'cpu') });
    console.log(`rendered ${files.length} kernel sources (${plans.length} plans, ${new Set(specs.map((s) => s.name)).size} elementwise chains)`);
    if (!process.argv.includes('--quiet')) for (const f of files) console.log(`  ${relative(root, f)}`);
  } catch (e) {
    console.error(`render-kernels: ${(e as Error).message}`);
    process.exit(1);
  }
}
