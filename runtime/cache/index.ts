// Cache engine (Cache-DiT hybrid cache acceleration), host-side logic. See engine.ts for the executor
// interface the native runtime implements.
export * from './config.ts';
export * from './steps-mask.ts';
export * from './context.ts';
export * from './dbprune.ts';
export * from './calibrators.ts';
export * from './engine.ts';
export * from './toy-runner.ts';
export { pyFloatRepr, pyRound, npPercentile } from './pyfmt.ts';
export * from './executor-runner.ts';
export * from './native-runner.ts';
export * from './native-ops.ts';
export * from './tensor-ops.ts';
export * from './host-runner.ts';
