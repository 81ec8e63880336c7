// Worker-thread bootstrap for launchShm (plain JS so it loads without a TS loader): attaches to the shared
// world, runs the rank's entry and reports the result. Beside the TypeScript sources it registers tsx first;
// in the compiled package (shm.js beside it) and for a .js rank module it needs none.
import { existsSync } from 'node:fs';
import { workerData, parentPort } from 'node:worker_threads';

const { w, rank, module, exportName, args } = workerData;
const compiled = existsSync(new URL('./shm.js', import.meta.url));
if (!compiled || /\.ts$/.test(module)) {
  const { register } = await import('tsx/esm/api');
  register();
}
const ext = compiled ? 'js' : 'ts';
const { ShmCommunicator } = await import(`./shm.${ext}`);
const { CommError } = await import(`./communicator.${ext}`);
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
