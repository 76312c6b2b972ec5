/**
 * One environment's settings (`environments.json`), validated once when the app starts so that a typo
 * fails the synth with a message naming the field, not a half-built stack.
 */
import { LAMBDA_MAX_MEMORY_MIB, largestLocalDay, localRollupMemoryMiB } from './sizing';
import * as fs from 'node:fs';

/** An API that already exists, to which the authorizer is attached instead of the example API. */
export interface ExistingApi {
  /** `rest` (API Gateway REST API, authorizer cache flushed per stage) or `http` (HTTP API). */
  readonly kind: 'rest' | 'http';
  /** The API's id (`abc123defg`). */
  readonly apiId: string;
  /** The stage whose authorizer cache a revocation flushes. */
  readonly stage: string;
}

export interface EnvironmentSettings {
  /** The environment's name (`prod`, `staging`, …): part of every resource name. */
  readonly name: string;
  /** Deletion protection on the tables (point-in-time recovery and retention of data are always on). */
  readonly protectData: boolean;
  /** Days the Lambdas' and the API's logs are kept. */
  readonly logRetentionDays: number;
  /** An address subscribed to the alerts topic (it must confirm the subscription), or none. */
  readonly alarmEmail: string | null;
  /** The log group the API backend prints usage lines to; none means the example API's backend. */
  readonly usageLogGroup: string | null;
  /** Attach the authorizer to this API instead of (or besides) the example API. */
  readonly existingApi: ExistingApi | null;
  /** Deploy the example API (REST API + authorizer + backend). Default: when there is no existing API. */
  readonly exampleApi: boolean;
  /** The pricing file (relative to the repository) that scripts/deploy uploads for the monthly report. */
  readonly pricingFile: string;
  /** Athena's per-query scan limit in the workgroup, in GB. */
  readonly athenaBytesScannedCutoffGb: number;
  /**
   * Where the nightly reconcile computes its rollup: `local` (the Lambda reads the archive's files) or
   * `athena` (the rollup SQL in the workgroup), for days beyond one Lambda (ARCHITECTURE.md, scale-out).
   */
  readonly rollupEngine: 'local' | 'athena';
  /**
   * Usage events of the busiest day you expect (a peak day, with growth). With `rollupEngine: "local"`
   * it sizes the reconcile function (lib/sizing.ts); a day beyond one Lambda is refused with the advice
   * to use Athena.
   */
  readonly busiestDayEvents: number;
  /**
   * Lambda concurrency reserved for the archive transformer (0: none), so that the authorizer and the
   * backend cannot take all of it (a throttled transformer sends usage to Firehose's error output).
   * AWS keeps 100 of the account's quota unreserved: the quota must be at least this plus 100, which
   * `scripts/deploy`'s preflight checks (a new account's quota may be 10: leave it 0 there).
   */
  readonly transformerReservedConcurrency: number;
  /**
   * Lambda concurrency reserved for the report-links function (0: none), which is also the most it
   * may use: its function URL is public (each link's signature is checked inside), so this bounds what
   * a flood of requests can take from the authorizer and the backend, and what it costs. Counted
   * against the quota with `transformerReservedConcurrency` by the preflight.
   */
  readonly linksReservedConcurrency: number;
  /** Hour (UTC) of the nightly reconcile; late enough for Lambda's asynchronous retries (6 h). */
  readonly reconcileHourUtc: number;
  /** Days before today each reconcile recomputes: covers CloudWatch Logs' 24 h of redelivery. */
  readonly reconcileLookbackDays: number;
  /** Requests of drift in one run above which the drift alarm fires (0: any drift). */
  readonly driftAlarmThreshold: number;
  /** Hours without a single usage event after which the "no usage" alarm fires; 0 turns it off (an
   * environment that may sit idle). */
  readonly noUsageAlarmHours: number;
  /** Days after which archive files move to S3 Standard-IA, then to Glacier Instant Retrieval. */
  readonly archiveInfrequentAccessDays: number;
  readonly archiveGlacierDays: number;
}

const DEFAULTS: Omit<EnvironmentSettings, 'name' | 'exampleApi'> = {
  protectData: true,
  logRetentionDays: 90,
  alarmEmail: null,
  usageLogGroup: null,
  existingApi: null,
  pricingFile: 'reports/pricing.example.toml',
  athenaBytesScannedCutoffGb: 10,
  rollupEngine: 'local',
  busiestDayEvents: 4_000_000,
  transformerReservedConcurrency: 0,
  linksReservedConcurrency: 0,
  reconcileHourUtc: 7,
  reconcileLookbackDays: 3,
  driftAlarmThreshold: 0,
  noUsageAlarmHours: 6,
  archiveInfrequentAccessDays: 30,
  archiveGlacierDays: 180,
};

/** CloudWatch Logs' accepted retention periods, in days. */
const RETENTION_DAYS = [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653];

/** A setting that is wrong, named with the file and field. */
export class SettingsError extends Error {}

/** The names of the environments in `file`. */
export function environmentNames(file: string): string[] {
  return Object.keys(readFile(file)).filter((name) => !name.startsWith('$'));
}

/** The settings of environment `name` in `file`, defaults filled in. */
export function loadSettings(file: string, name: string): EnvironmentSettings {
  const all = readFile(file);
  const raw = all[name];
  if (name.startsWith('$') || raw === undefined) {
    throw new SettingsError(
      `unknown environment "${name}": ${file} defines ${environmentNames(file).join(', ') || 'none'}`,
    );
  }
  return validate(name, raw, `${file}: ${name}`);
}

function readFile(file: string): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new SettingsError(`cannot read the environments from ${file}: ${(err as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new SettingsError(`${file} must hold one object, an entry per environment`);
  }
  return parsed as Record<string, unknown>;
}

/** Checks every field of one environment's entry; unknown fields are errors (a typo is not a default). */
export function validate(name: string, raw: unknown, where: string): EnvironmentSettings {
  if (!/^[a-z][a-z0-9-]{0,19}$/.test(name)) {
    throw new SettingsError(`${where}: an environment name is 1 to 20 lowercase letters, digits or '-'`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new SettingsError(`${where}: settings must be an object`);
  }
  const entry = raw as Record<string, unknown>;
  const known = new Set([...Object.keys(DEFAULTS), 'exampleApi']);
  for (const field of Object.keys(entry)) {
    if (!known.has(field)) throw new SettingsError(`${where}: unknown setting "${field}"`);
  }
  const pick = <K extends keyof typeof DEFAULTS>(field: K): (typeof DEFAULTS)[K] =>
    (entry[field] === undefined ? DEFAULTS[field] : entry[field]) as (typeof DEFAULTS)[K];
  const fail = (field: string, expected: string): never => {
    throw new SettingsError(`${where}: ${field} must be ${expected} (got ${JSON.stringify(entry[field])})`);
  };
  const integer = (field: keyof typeof DEFAULTS, min: number, max: number): number => {
    const value = pick(field);
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
      fail(field, `an integer from ${min} to ${max}`);
    }
    return value as number;
  };
  const protectData = pick('protectData');
  if (typeof protectData !== 'boolean') fail('protectData', 'true or false');
  const logRetentionDays = integer('logRetentionDays', 1, 3653);
  if (!RETENTION_DAYS.includes(logRetentionDays)) {
    fail('logRetentionDays', `one of CloudWatch's retention periods (${RETENTION_DAYS.join(', ')})`);
  }
  const alarmEmail = pick('alarmEmail');
  if (alarmEmail !== null && (typeof alarmEmail !== 'string' || !/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(alarmEmail))) {
    fail('alarmEmail', 'an e-mail address or null');
  }
  const usageLogGroup = pick('usageLogGroup');
  if (usageLogGroup !== null && (typeof usageLogGroup !== 'string' || !/^[\w\-/.#]{1,512}$/.test(usageLogGroup))) {
    fail('usageLogGroup', 'a log group name or null');
  }
  const existingApi = pick('existingApi');
  if (existingApi !== null) {
    const api = existingApi as Partial<ExistingApi> | undefined;
    const ok =
      typeof api === 'object' &&
      (api.kind === 'rest' || api.kind === 'http') &&
      typeof api.apiId === 'string' &&
      /^[a-z0-9]{10}$/.test(api.apiId) &&
      typeof api.stage === 'string' &&
      /^[\w$-]{1,128}$/.test(api.stage);
    if (!ok) fail('existingApi', '{"kind": "rest"|"http", "apiId": "<10 characters>", "stage": "<stage>"} or null');
  }
  const exampleApi = entry.exampleApi === undefined ? existingApi === null : entry.exampleApi;
  if (typeof exampleApi !== 'boolean') fail('exampleApi', 'true or false');
  if (!exampleApi && existingApi === null) {
    fail('exampleApi', 'true when there is no existingApi (the authorizer needs an API)');
  }
  if (!exampleApi && usageLogGroup === null) {
    fail('usageLogGroup', "the API backend's log group when the example API is not deployed");
  }
  const rollupEngine = pick('rollupEngine');
  if (rollupEngine !== 'local' && rollupEngine !== 'athena') fail('rollupEngine', '"local" or "athena"');
  const pricingFile = pick('pricingFile');
  if (typeof pricingFile !== 'string' || pricingFile.length === 0) fail('pricingFile', 'a path');
  const settings: EnvironmentSettings = {
    name,
    protectData: protectData as boolean,
    logRetentionDays,
    alarmEmail: alarmEmail as string | null,
    usageLogGroup: usageLogGroup as string | null,
    existingApi: existingApi as ExistingApi | null,
    exampleApi: exampleApi as boolean,
    pricingFile: pricingFile as string,
    athenaBytesScannedCutoffGb: integer('athenaBytesScannedCutoffGb', 1, 100_000),
    rollupEngine: rollupEngine as 'local' | 'athena',
    busiestDayEvents: integer('busiestDayEvents', 0, 100_000_000_000),
    transformerReservedConcurrency: integer('transformerReservedConcurrency', 0, 1_000),
    linksReservedConcurrency: integer('linksReservedConcurrency', 0, 100),
    reconcileHourUtc: integer('reconcileHourUtc', 6, 23),
    reconcileLookbackDays: integer('reconcileLookbackDays', 2, 31),
    driftAlarmThreshold: integer('driftAlarmThreshold', 0, 1_000_000_000),
    noUsageAlarmHours: integer('noUsageAlarmHours', 0, 168),
    archiveInfrequentAccessDays: integer('archiveInfrequentAccessDays', 30, 3650),
    archiveGlacierDays: integer('archiveGlacierDays', 90, 36500),
  };
  if (settings.rollupEngine === 'local' && localRollupMemoryMiB(settings.busiestDayEvents) === null) {
    fail('busiestDayEvents', `at most ${largestLocalDay().toLocaleString('en-US')} events for a local rollup in one Lambda ` +
      `(${settings.busiestDayEvents.toLocaleString('en-US')} would need more than ${LAMBDA_MAX_MEMORY_MIB} MiB); ` +
      'set "rollupEngine": "athena" for a day this busy');
  }
  if (settings.archiveGlacierDays < settings.archiveInfrequentAccessDays + 30) {
    fail('archiveGlacierDays', 'at least 30 days after archiveInfrequentAccessDays (S3 Standard-IA minimum)');
  }
  return settings;
}
