#!/usr/bin/env node
// CLI entry: in a checkout the TypeScript sources through tsx; in an installed package (no .ts sources
// shipped) the compiled JavaScript under dist/.
import { existsSync } from 'node:fs';

if (existsSync(new URL('../compiler/cli/main.ts', import.meta.url))) {
  const { register } = await import('tsx/esm/api');
  register();
  await import('../compiler/cli/main.ts');
} else {
  await import(new URL('../dist/compiler/cli/main.js', import.meta.url).href);
}
