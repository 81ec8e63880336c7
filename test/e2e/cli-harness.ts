// Runs the `ditforge` CLI as a user does (node bin/ditforge.mjs ...) for the end-to-end tests.
import { afterAll, expect } from 'vitest';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export const ROOT = path.resolve(import.meta.dirname, '../..');
const BIN = path.join(ROOT, 'bin/ditforge.mjs');

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * A scratch folder (removed after the calling file's tests) and `cli(args)`, which runs
 * `ditforge ...leading ...args` in it (debug output off, 2 min bound).
 */
export function cliInTmp(tmpPrefix: string, leading: string[] = []): { tmp: string; cli: (args: string[]) => CliResult } {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), tmpPrefix));
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const cli = (args: string[]): CliResult => {
    const r = spawnSync(process.execPath, [BIN, ...leading, ...args], {
      cwd: tmp,
      encoding: 'utf8',
      env: { ...process.env, DITFORGE_DEBUG: '' },
      timeout: 120_000,
    });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  };
  return { tmp, cli };
}

/** exit 1, one clear line on stderr matching `re`, no stack trace */
export function expectCleanError(r: CliResult, re: RegExp): void {
  expect(r.code).toBe(1);
  expect(r.stderr).toMatch(re);
  expect(r.stderr).not.toMatch(/\n\s+at .+\(.*:\d+:\d+\)/);
  expect(r.stderr).not.toMatch(/^\s+at /m);
  expect(r.stderr.trim().split('\n').length).toBe(1);
  expect(r.stdout).toBe('');
}

/** stderr without the denoising progress lines (text or --json events) a run without a terminal prints */
export function withoutProgress(stderr: string): string {
  return stderr
    .split('\n')
    .filter((l) => !/^denoising: step \d+\/\d+/.test(l) && !/^\{"event":"step"/.test(l))
    .join('\n');
}
