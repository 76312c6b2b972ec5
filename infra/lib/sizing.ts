// The reconcile function's memory, from one measured figure: what a local rollup holds per event of
// the busiest day it reads. The figures are reconcile/src/engine.rs's (the infra tests hold them
// equal), which says where they were measured.

/** `ROLLUP_BYTES_PER_ROW` in reconcile/src/engine.rs. */
export const ROLLUP_BYTES_PER_ROW = 240;
/** `ROLLUP_BASE_MIB` in reconcile/src/engine.rs. */
export const ROLLUP_BASE_MIB = 100;
/** `ROLLUP_HEADROOM` in reconcile/src/engine.rs. */
export const ROLLUP_HEADROOM = 2;
/** `LAMBDA_MAX_MEMORY_MIB` in reconcile/src/engine.rs. */
export const LAMBDA_MAX_MEMORY_MIB = 10_240;
/** With Athena computing the rollup, the function holds the day items and the parked usage only. */
export const ATHENA_RECONCILE_MEMORY_MIB = 1024;

/** `local_rollup_memory_mib` in reconcile/src/engine.rs: MiB for a local rollup whose busiest day
 * holds `events`, or null beyond one Lambda. */
export function localRollupMemoryMiB(events: number): number | null {
  const need = (ROLLUP_BASE_MIB + Math.ceil((events * ROLLUP_BYTES_PER_ROW) / 2 ** 20)) * ROLLUP_HEADROOM;
  const rounded = Math.ceil(need / 64) * 64;
  return rounded <= LAMBDA_MAX_MEMORY_MIB ? rounded : null;
}

/** The busiest day a local rollup can take in one Lambda. */
export function largestLocalDay(): number {
  const rows = ((LAMBDA_MAX_MEMORY_MIB / ROLLUP_HEADROOM - ROLLUP_BASE_MIB) * 2 ** 20) / ROLLUP_BYTES_PER_ROW;
  return Math.floor(rows / 100_000) * 100_000;
}
