// Ranks never outlive the user: SIGINT to `ditforge generate --world 2 --comm mpi` while the ranks run stops
// mpirun and every rank within seconds, and the CLI exits with 130 saying so.
import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { mpiAvailable } from '../../runtime/comm/index.ts';
import { ROOT } from './cli-harness.ts';

/** the pids of `pid`'s descendants */
function descendants(pid: number): number[] {
  const rows = spawnSync('ps', ['-eo', 'pid=,ppid='], { encoding: 'utf8' }).stdout.trim().split('\n').map((l) => l.trim().split(/\s+/).map(Number) as [number, number]);
  const out: number[] = [];
  const todo = [pid];
  while (todo.length) {
    const p = todo.pop()!;
    for (const [c, pp] of rows) if (pp === p) out.push(c), todo.push(c);
  }
  return out;
}
/** still running: exists and is not a zombie (an exited rank waiting for a reaper counts as gone) */
const alive = (pid: number): boolean => {
  const st = spawnSync('ps', ['-o', 'stat=', '-p', String(pid)], { encoding: 'utf8' }).stdout.trim();
  return st !== '' && !st.startsWith('Z');
};

describe.skipIf(!mpiAvailable().ok)('SIGINT during a multi-rank run', () => {
  it('mpi: mpirun and both ranks are gone within seconds; exit 130 with one line saying so', async () => {
    const child = spawn(process.execPath, [path.join(ROOT, 'bin', 'ditforge.mjs'), 'generate', '--model', 'tiny-flux', '--prompt', 'a red circle', '--steps', '5000', '--world', '2', '--comm', 'mpi', '--out', path.join(ROOT, 'scratch', 'interrupt.png')], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += String(d)));
    // wait until mpirun has started its two ranks
    let tree: number[] = [];
    for (let t = 0; t < 600 && tree.length < 3; t++) {
      await new Promise((r) => setTimeout(r, 100));
      tree = descendants(child.pid!);
    }
    expect(tree.length, 'mpirun and two ranks').toBeGreaterThanOrEqual(3);
    const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
    child.kill('SIGINT');
    expect(await exited).toBe(130);
    await new Promise((r) => setTimeout(r, 500));
    const left = tree.filter(alive);
    expect(left.map((p) => spawnSync('ps', ['-o', 'args=', '-p', String(p)], { encoding: 'utf8' }).stdout.trim()), 'processes left behind').toEqual([]);
    expect(stderr).toMatch(/interrupted \(SIGINT\): the 2 mpirun ranks are stopped/);
  }, 90_000);
});
