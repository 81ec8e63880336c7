// Open MPI communicator: one OS process per rank (any number of hosts), started by mpirun. Uses the
// optional N-API addon built by scripts/build-mpi.mjs (build/mpi/Release/ditforge_mpi.node).
// Blocking MPI calls run off the JS thread, so every operation has a watchdog: on timeout (or when
// the rank's entry throws) the rank prints an error naming itself / the peer and calls MPI_Abort, and
// mpirun tears the whole job down (a rank that dies is reported by mpirun with its rank) — bounded,
// never a hang.
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, writeSync } from 'node:fs';
import { constants } from 'node:os';
import { join } from 'node:path';
import { PACKAGE_ROOT } from '../package-root.ts';
import {
  type CommBuffer,
  type Communicator,
  CommunicatorBase,
  OpQueue,
  asBytes,
  defaultTimeoutMs,
} from './communicator.ts';

interface MpiAddon {
  init(): { rank: number; size: number; threadMultiple: boolean; threadLevel: number; library: string };
  alltoallv(send: CommBuffer, sendBytes: number[], recv: CommBuffer, recvBytes: number[]): Promise<void>;
  allreduceSum(buf: Float32Array | Float64Array): Promise<void>;
  allgatherv(send: CommBuffer, recv: CommBuffer, bytes: number[]): Promise<void>;
  sendrecv(send: CommBuffer, dest: number, recv: CommBuffer, src: number, tag: number): Promise<void>;
  send(buf: CommBuffer, dest: number, tag: number): Promise<void>;
  recv(buf: CommBuffer, src: number, tag: number): Promise<void>;
  barrier(): Promise<void>;
  abort(code: number): void;
  finalize(): void;
  wtime(): number;
}

export const MPI_ADDON_PATH = process.env.DITFORGE_MPI_ADDON ?? join(PACKAGE_ROOT, 'build/mpi/Release/ditforge_mpi.node');

let cached: MpiAddon | null = null;

/** Whether the MPI backend can run here: addon built and mpirun on PATH; `reason` says what is missing. */
export function mpiAvailable(): { ok: boolean; reason: string } {
  const mpirun = spawnSync('sh', ['-c', 'command -v mpirun'], { encoding: 'utf8' });
  if (mpirun.status !== 0) return { ok: false, reason: 'mpirun not found on PATH (install openmpi-bin libopenmpi-dev)' };
  if (!existsSync(MPI_ADDON_PATH)) return { ok: false, reason: `MPI addon not built (${MPI_ADDON_PATH}); run node scripts/build-mpi.mjs` };
  return { ok: true, reason: '' };
}

/** Loads the addon (RTLD_GLOBAL so Open MPI's dlopen'ed components see libmpi's symbols). */
export function loadMpiAddon(): MpiAddon {
  if (cached) return cached;
  if (!existsSync(MPI_ADDON_PATH)) throw new Error(`MPI addon not found at ${MPI_ADDON_PATH}: run node scripts/build-mpi.mjs (needs Open MPI)`);
  const m = { exports: {} as MpiAddon };
  process.dlopen(m, MPI_ADDON_PATH, constants.dlopen.RTLD_NOW | constants.dlopen.RTLD_GLOBAL);
  cached = m.exports;
  return cached;
}

export interface MpiOptions {
  /** Watchdog per operation (ms). Default DITFORGE_COMM_TIMEOUT_MS or 300 s. */
  timeoutMs?: number;
}

export class MpiCommunicator extends CommunicatorBase implements Communicator {
  readonly backend = 'mpi';
  readonly rank: number;
  readonly worldSize: number;
  readonly threadMultiple: boolean;
  readonly library: string;
  private readonly collQ = new OpQueue();
  private readonly sendQ: OpQueue[];
  private readonly recvQ: OpQueue[];
  private readonly timeoutMs: number;
  private closed = false;
  /** Collective progress: op sequence number published to a per-job file (same-host diagnosis). */
  private seq = 0;
  private progressFd: number | null = null;
  private progressDir: string | null = null;

  private constructor(
    private readonly mpi: MpiAddon,
    opts: MpiOptions,
  ) {
    super();
    const info = mpi.init();
    this.rank = info.rank;
    this.worldSize = info.size;
    this.threadMultiple = info.threadMultiple;
    this.library = info.library;
    this.timeoutMs = opts.timeoutMs ?? defaultTimeoutMs();
    // Without MPI_THREAD_MULTIPLE every call goes through one queue (rings must use sendRecv).
    this.sendQ = Array.from({ length: this.worldSize }, () => (this.threadMultiple ? new OpQueue() : this.collQ));
    this.recvQ = Array.from({ length: this.worldSize }, () => (this.threadMultiple ? new OpQueue() : this.collQ));
    const session = process.env.OMPI_MCA_orte_jobfam_session_dir;
    if (session) {
      try {
        this.progressDir = join(session, `ditforge-progress-${process.env.OMPI_MCA_ess_base_jobid ?? 'job'}`);
        mkdirSync(this.progressDir, { recursive: true });
        this.progressFd = openSync(join(this.progressDir, `rank-${this.rank}`), 'w');
        this.publish('init');
      } catch {
        this.progressFd = null;
      }
    }
  }

  private publish(what: string): void {
    if (this.progressFd === null) return;
    const line = Buffer.from(`${this.seq} ${what}`.padEnd(80, ' ').slice(0, 80));
    try {
      writeSync(this.progressFd, line, 0, line.length, 0);
    } catch {
      /* diagnostics only */
    }
  }

  /** Ranks behind this one in the collective sequence (readable when they share this host). */
  private laggards(): string {
    if (!this.progressDir) return 'a peer (collective over all ranks)';
    const behind: string[] = [];
    for (let r = 0; r < this.worldSize; r++) {
      if (r === this.rank) continue;
      let txt: string;
      try {
        txt = readFileSync(join(this.progressDir, `rank-${r}`), 'utf8').trim();
      } catch {
        continue; // another host: unknown
      }
      const n = Number(txt.split(' ')[0]);
      if (n < this.seq) behind.push(`rank ${r} (at collective #${n} ${txt.split(' ').slice(1).join(' ')})`);
    }
    return behind.length ? behind.join(', ') : 'a peer on another host (collective over all ranks)';
  }

  /** MPI_Init_thread (once per process) and the world communicator. Must run under mpirun (or singleton). */
  static init(opts: MpiOptions = {}): MpiCommunicator {
    return new MpiCommunicator(loadMpiAddon(), opts);
  }


  /** Prints why and aborts the whole MPI job (every rank exits; mpirun reports this rank). */
  abort(message: string, code = 1): never {
    process.stderr.write(`[ditforge mpi] rank ${this.rank}/${this.worldSize}: ${message}; calling MPI_Abort\n`);
    this.mpi.abort(code);
    process.exit(code); // not reached
  }

  private watch<T>(q: OpQueue, what: string, peer: number | null, fn: () => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new Error(`mpi rank ${this.rank}: ${what} on a closed communicator`));
    return q.run(async () => {
      if (peer === null) {
        this.seq++;
        this.publish(what);
      }
      const timer = setTimeout(() => {
        this.abort(
          `${what} (collective #${this.seq}) timed out after ${this.timeoutMs} ms waiting for ${peer === null ? this.laggards() : `rank ${peer}`} (dead or stuck)`,
          124,
        );
      }, this.timeoutMs);
      try {
        return await fn();
      } finally {
        clearTimeout(timer);
      }
    });
  }

  allToAll(send: CommBuffer, sendCounts: number[], recv: CommBuffer, recvCounts: number[]): Promise<void> {
    const { sendBytes, recvBytes } = this.startAllToAll(send, sendCounts, recv, recvCounts);
    return this.watch(this.collQ, 'allToAll', null, () => this.mpi.alltoallv(asBytes(send), sendBytes, asBytes(recv), recvBytes));
  }

  allReduceSum(buf: Float32Array | Float64Array): Promise<void> {
    this.countAllReduce(buf);
    return this.watch(this.collQ, 'allReduceSum', null, () => this.mpi.allreduceSum(buf));
  }

  allGather(send: CommBuffer, recv: CommBuffer, counts?: number[]): Promise<void> {
    const es = send.BYTES_PER_ELEMENT;
    const cnt = this.startAllGather(send, recv, counts);
    return this.watch(this.collQ, 'allGather', null, () => this.mpi.allgatherv(asBytes(send), asBytes(recv), cnt.map((c) => c * es)));
  }

  send(buf: CommBuffer, dest: number): Promise<void> {
    this.countSend(buf, dest);
    return this.watch(this.sendQ[dest], `send to rank ${dest}`, dest, () => this.mpi.send(asBytes(buf), dest, 0));
  }

  recv(buf: CommBuffer, src: number): Promise<void> {
    this.countRecv(buf, src);
    return this.watch(this.recvQ[src], `recv from rank ${src}`, src, () => this.mpi.recv(asBytes(buf), src, 0));
  }

  sendRecv(send: CommBuffer, dest: number, recv: CommBuffer, src: number): Promise<void> {
    this.countSendRecv(send, dest, recv, src);
    // Occupies both directions' queues so FIFO order per pair holds with plain send/recv too.
    const q = this.threadMultiple ? this.sendQ[dest] : this.collQ;
    const rq = this.threadMultiple ? this.recvQ[src] : null;
    const op = () => this.mpi.sendrecv(asBytes(send), dest, asBytes(recv), src, 0);
    if (!rq) return this.watch(q, `sendRecv (to ${dest}, from ${src})`, src, op);
    return rq.run(() => this.watch(q, `sendRecv (to ${dest}, from ${src})`, src, op));
  }

  barrier(): Promise<void> {
    this.countBarrier();
    return this.watch(this.collQ, 'barrier', null, () => this.mpi.barrier());
  }

  wtime(): number {
    return this.mpi.wtime();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.progressFd !== null) closeSync(this.progressFd);
    this.progressFd = null;
    this.mpi.finalize();
  }
}

/**
 * Entry helper for scripts started by mpirun: initialises MPI, runs `entry`, finalises. A throw (or an
 * unhandled rejection) prints `rank r failed: ...` and MPI_Aborts the job.
 */
export async function runMpiRank<T>(entry: (comm: MpiCommunicator) => Promise<T>, opts: MpiOptions = {}): Promise<T> {
  const comm = MpiCommunicator.init(opts);
  const fail = (e: unknown): never => comm.abort(`failed: ${(e as Error)?.stack ?? e}`, 1);
  process.on('uncaughtException', fail);
  process.on('unhandledRejection', fail);
  let result: T;
  try {
    result = await entry(comm);
    await comm.barrier();
  } catch (e) {
    return fail(e);
  }
  await comm.close();
  return result;
}

export interface MpiLaunch {
  np: number;
  /** Script run by every rank (.ts through tsx). */
  script: string;
  args?: string[];
  env?: Record<string, string>;
  /** Kill mpirun after this long (ms); default 5 minutes. */
  timeoutMs?: number;
  /** Extra mpirun arguments. */
  mpirunArgs?: string[];
}

export interface MpiLaunchResult {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  ms: number;
  timedOut: boolean;
}

/** mpirun command line used by launchMpi (also what `ditforge generate --comm mpi` runs). */
export function mpirunCommand(l: MpiLaunch): string[] {
  return [
    'mpirun',
    '--allow-run-as-root',
    '--oversubscribe',
    '--bind-to',
    'none',
    ...(l.mpirunArgs ?? []),
    '-np',
    String(l.np),
    process.execPath,
    // a .ts rank script (the sources) through tsx; the compiled package's .js as it is
    ...(l.script.endsWith('.ts') ? ['--import', 'tsx/esm'] : []),
    l.script,
    ...(l.args ?? []),
  ];
}

/** Starts an MPI job and collects its output (bounded by timeoutMs: mpirun is killed after it). */
export function launchMpi(l: MpiLaunch): Promise<MpiLaunchResult> {
  const [cmd, ...argv] = mpirunCommand(l);
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, argv, {
      cwd: PACKAGE_ROOT,
      // Shared-memory transfers use CMA (single copy) where the kernel allows it; in containers that
      // forbid ptrace-style access set OMPI_MCA_btl_vader_single_copy_mechanism=none (4x slower here).
      env: { ...process.env, ...l.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const stop = (): void => {
      child.kill('SIGTERM');
      setTimeout(() => child.kill('SIGKILL'), 3000).unref();
    };
    const timer = setTimeout(() => {
      timedOut = true;
      stop();
    }, l.timeoutMs ?? 300_000);
    // the ranks never outlive the user: a signal to this process reaches mpirun (which passes it to the
    // ranks), and this process leaves once mpirun is gone, with the signal's exit status
    let interrupted: NodeJS.Signals | null = null;
    const onSignal = (s: NodeJS.Signals): void => {
      interrupted = s;
      stop();
    };
    const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
    for (const s of signals) process.on(s, onSignal);
    const onExit = (): void => {
      child.kill('SIGKILL');
    };
    process.on('exit', onExit);
    const done = (): void => {
      clearTimeout(timer);
      for (const s of signals) process.off(s, onSignal);
      process.off('exit', onExit);
    };
    child.on('error', (e) => {
      done();
      reject(e);
    });
    child.on('close', (code, signal) => {
      done();
      if (interrupted) {
        process.stderr.write(`interrupted (${interrupted}): the ${l.np} mpirun ranks are stopped\n`);
        process.exit(interrupted === 'SIGINT' ? 130 : 143);
      }
      resolve({ code, signal, stdout, stderr, ms: Date.now() - t0, timedOut });
    });
  });
}

/** Lines `DITFORGE_RESULT <json>` printed by ranks, parsed. */
export function parseRankResults<T>(stdout: string): T[] {
  return stdout
    .split('\n')
    .filter((l) => l.startsWith('DITFORGE_RESULT '))
    .map((l) => JSON.parse(l.slice('DITFORGE_RESULT '.length)) as T);
}
