/**
 * The policy-as-code rules (rules.ts) hold on every environment's template, and each one fails on a
 * template that breaks it.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { RULES, type TemplateJson, violations } from './rules';
import { settings, synth } from './helpers';

/** The environments scripts/deploy accepts, and the two ways to attach to an existing API. */
const environments: [string, Record<string, unknown>][] = [
  ...Object.entries(JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'environments.json'), 'utf8')))
    .filter(([name]) => !name.startsWith('$'))
    .map(([name, values]) => [name, { ...(values as Record<string, unknown>), pricingFile: undefined }] as [string, Record<string, unknown>]),
  ...(['rest', 'http'] as const).map((kind): [string, Record<string, unknown>] => [
    `existing-${kind}`,
    { existingApi: { kind, apiId: 'a1b2c3d4e5', stage: 'live' }, usageLogGroup: '/aws/lambda/orders-api' },
  ]),
];
const templates = new Map(
  environments.map(([name, values]) => {
    const defined = Object.fromEntries(Object.entries(values).filter(([, v]) => v !== undefined && v !== null));
    return [name, synth(settings(name, defined)).template.toJSON() as TemplateJson];
  }),
);
const prod = templates.get('prod')!;

describe('the rules hold on every environment', () => {
  for (const [name, template] of templates) {
    it(`${name}: no violation`, () => assert.deepEqual(violations(template), []));
  }
});

/** A copy of prod's template with `change` made to it. */
function broken(change: (t: TemplateJson) => void): TemplateJson {
  const copy = structuredClone(prod);
  change(copy);
  return copy;
}
const find = (t: TemplateJson, type: string, idPrefix: string) => {
  const found = Object.entries(t.Resources).find(([id, r]) => r.Type === type && id.startsWith(idPrefix));
  assert.ok(found, `${type} ${idPrefix}*`);
  return found;
};
function failsOn(ruleName: string, template: TemplateJson, mentions: string) {
  const rule = RULES.find((r) => r.name === ruleName);
  assert.ok(rule, ruleName);
  const found = rule.check(template);
  assert.ok(found.some((v) => v.includes(mentions)), `${ruleName}: ${JSON.stringify(found)}`);
}

describe('each rule fails on a template that breaks it', () => {
  it('an alarm topic whose policy has only the SSL deny (what enforceSSL alone writes)', () => {
    const t = broken((t) => {
      const [, policy] = find(t, 'AWS::SNS::TopicPolicy', 'DataAlertsPolicy');
      policy.Properties.PolicyDocument.Statement = policy.Properties.PolicyDocument.Statement.filter((s: any) => s.Effect === 'Deny');
    });
    failsOn("every alarm topic admits this account's CloudWatch alarms", t, 'DataAlerts');
  });

  it('an alarm topic whose key does not admit CloudWatch', () => {
    const t = broken((t) => {
      const [, key] = find(t, 'AWS::KMS::Key', 'DataTopicKey');
      key.Properties.KeyPolicy.Statement = key.Properties.KeyPolicy.Statement.filter(
        (s: any) => !JSON.stringify(s.Principal ?? {}).includes('cloudwatch.amazonaws.com'),
      );
    });
    failsOn("every alarm topic admits this account's CloudWatch alarms", t, 'DataTopicKey');
  });

  it('a publisher of the encrypted revocation topic without its key (the grace-end state machine as it was)', () => {
    const t = broken((t) => {
      const [, policy] = find(t, 'AWS::IAM::Policy', 'GraceEndRoleDefaultPolicy');
      policy.Properties.PolicyDocument.Statement = policy.Properties.PolicyDocument.Statement.filter(
        (s: any) => !JSON.stringify(s.Action).includes('kms:'),
      );
    });
    failsOn('every publisher of an encrypted topic holds its key', t, 'GraceEndRole');
  });

  it('a table retained even after a failed create', () => {
    const t = broken((t) => {
      find(t, 'AWS::DynamoDB::Table', 'DataApiKeys')[1].DeletionPolicy = 'Retain';
    });
    failsOn('every retained resource is RetainExceptOnCreate', t, 'DataApiKeys');
  });

  it('a Glue table without its dependency on the database', () => {
    const t = broken((t) => {
      delete find(t, 'AWS::Glue::Table', 'ArchiveUsageTable')[1].DependsOn;
    });
    failsOn('every Glue table depends on its database', t, 'ArchiveUsageTable');
  });

  it('Firehose error output nobody hears of', () => {
    const withoutConversionAlarm = broken((t) => {
      delete t.Resources[find(t, 'AWS::CloudWatch::Alarm', 'MonitoringFirehoseConversionFailed')[0]];
    });
    failsOn('every Firehose error path is alarmed', withoutConversionAlarm, 'FailedConversion.Records');
    const withoutRequestMetrics = broken((t) => {
      delete find(t, 'AWS::S3::Bucket', 'DataArchive')[1].Properties.MetricsConfigurations;
    });
    failsOn('every Firehose error path is alarmed', withoutRequestMetrics, 'firehose-errors/');
  });

  it('a state machine nobody hears fail', () => {
    const t = broken((t) => {
      const [id] = find(t, 'AWS::CloudWatch::Alarm', 'MonitoringGraceEndExecutionsFailed');
      delete t.Resources[id];
    });
    failsOn('every state machine alarms on failed executions', t, 'GraceEnd');
  });
  it("a subscription filter whose role gets its permission from a separate, late policy (the L2's default)", () => {
    const t = broken((t) => {
      const [roleId, role] = find(t, 'AWS::IAM::Role', 'ArchiveLogsToFirehoseRole');
      const statements = role.Properties.Policies.flatMap((p: any) => p.PolicyDocument.Statement);
      delete role.Properties.Policies;
      t.Resources.LatePolicy = {
        Type: 'AWS::IAM::Policy',
        Properties: { PolicyName: 'late', Roles: [{ Ref: roleId }], PolicyDocument: { Statement: statements } },
      };
    });
    failsOn("every subscription filter's role holds its permission from the start", t, 'ArchiveLogsToFirehoseRole');
  });

  it('a subscription filter whose role names its stream by reference', () => {
    const t = broken((t) => {
      const [, role] = find(t, 'AWS::IAM::Role', 'ArchiveLogsToFirehoseRole');
      const [streamId] = find(t, 'AWS::KinesisFirehose::DeliveryStream', 'Archive');
      role.Properties.Policies[0].PolicyDocument.Statement[0].Resource = { 'Fn::GetAtt': [streamId, 'Arn'] };
    });
    failsOn("every subscription filter's role holds its permission from the start", t, 'waits for the destination');
  });
});
