#!/usr/bin/env node
// CLI entry: registers tsx so the TypeScript sources run as shipped, then starts the CLI.
import { register } from 'tsx/esm/api';
register();
await import('../compiler/cli/main.ts');
