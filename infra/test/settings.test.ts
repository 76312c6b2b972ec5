import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { environmentNames, loadSettings, SettingsError, validate } from '../lib/settings';
import { tempDir } from './helpers';

const file = (content: unknown) => {
  const at = path.join(tempDir('meter-env-'), 'environments.json');
  fs.writeFileSync(at, JSON.stringify(content));
  return at;
};

describe('environment settings', () => {
  it('reads the committed environments with their defaults', () => {
    const committed = path.join(__dirname, '..', 'environments.json');
    assert.deepEqual(environmentNames(committed), ['prod', 'staging']);
    const prod = loadSettings(committed, 'prod');
    assert.equal(prod.protectData, true);
    assert.equal(prod.exampleApi, true);
    assert.equal(prod.reconcileHourUtc, 7);
  });

  it('names an unknown environment and the ones there are', () => {
    assert.throws(() => loadSettings(file({ prod: {} }), 'prd'), /unknown environment "prd": .* defines prod/);
  });

  it('refuses what would deploy something other than what was meant', () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ protectdata: true }, /unknown setting "protectdata"/],
      [{ logRetentionDays: 31 }, /logRetentionDays must be one of CloudWatch's retention periods/],
      [{ alarmEmail: 'ops' }, /alarmEmail must be an e-mail address/],
      [{ existingApi: { kind: 'soap', apiId: 'a1b2c3d4e5', stage: 'x' } }, /existingApi must be/],
      [{ exampleApi: false }, /exampleApi must be true when there is no existingApi/],
      [{ existingApi: { kind: 'rest', apiId: 'a1b2c3d4e5', stage: 'x' } }, /usageLogGroup must be the API backend's log group/],
      [{ reconcileHourUtc: 2 }, /reconcileHourUtc must be an integer from 6 to 23/],
      [{ archiveInfrequentAccessDays: 60, archiveGlacierDays: 80 }, /archiveGlacierDays must be an integer from 90/],
    ];
    for (const [entry, problem] of cases) {
      assert.throws(() => validate('x', entry, 'test'), (err: Error) => err instanceof SettingsError && problem.test(err.message), JSON.stringify(entry));
    }
    assert.throws(() => validate('Prod', {}, 'test'), /lowercase/);
  });
});
