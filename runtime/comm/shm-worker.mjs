// Worker-thread bootstrap for launchShm (plain JS so it loads without a TS loader): registers tsx for
// .ts modules, attaches to the shared world, runs the rank's entry and reports the result.
import { workerData, parentPort } from 'node:worker_threads';

const { w, rank, module, exportName, args } = workerData;
// shm.ts itself is TypeScript, so tsx is always registered.
{
  const { register } = await import('tsx/esm/api');
  register();
}
const { ShmCommunicator } = await import('./shm.ts');
const { CommError } = await import('./communicator.ts');
const comm = new ShmCommunicator(w, rank);
try {
  const mod = await import(module);
  const fn = mod[exportName];
  if (typeof fn !== 'function') throw new Error(`${module} has no exported function '${exportName}'`);
  const value = await fn(comm, args);
  parentPort.postMessage({ ok: true, value });
} catch (e) {
  if (!(e instanceof CommError)) comm.abort(`threw: ${e?.message ?? e}`);
  parentPort.postMessage({ ok: false, error: String(e?.message ?? e) });
}
