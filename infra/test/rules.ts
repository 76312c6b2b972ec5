/**
 * Policy as code: rules over a synthesized template that encode AWS behaviour synth, cdk-nag and
 * cfn-lint cannot see. Each rule answers the violations it finds, one sentence each, naming the
 * resource; rules.test.ts runs them on every environment's template and shows each one failing on a
 * template that breaks it.
 */

export type Resource = { Type: string; Properties?: any; DependsOn?: string | string[]; DeletionPolicy?: string };
export type TemplateJson = { Resources: Record<string, Resource> };

export interface Rule {
  readonly name: string;
  /** Where AWS says so. */
  readonly source: string;
  check(template: TemplateJson): string[];
}

const asList = <T>(value: T | T[] | undefined): T[] => (value === undefined ? [] : Array.isArray(value) ? value : [value]);
const ofType = (t: TemplateJson, type: string) => Object.entries(t.Resources).filter(([, r]) => r.Type === type);
const refTo = (value: any): string | undefined => (value && typeof value.Ref === 'string' ? value.Ref : undefined);
const arnOf = (value: any): string | undefined =>
  Array.isArray(value?.['Fn::GetAtt']) && value['Fn::GetAtt'][1] === 'Arn' ? value['Fn::GetAtt'][0] : undefined;
const allows = (statement: any, action: string): boolean =>
  statement.Effect === 'Allow' &&
  asList<string>(statement.Action).some((a) => a === action || a === '*' || (a.endsWith('*') && action.startsWith(a.slice(0, -1))));
const servicePrincipal = (statement: any): string[] => asList<string>(statement.Principal?.Service);

/** The metrics an alarm watches, whether it names one metric or a list of them (labelled or math). */
function alarmMetrics(alarm: Resource): { Namespace: string; MetricName: string; Dimensions: any[] }[] {
  const p = alarm.Properties;
  if (p.MetricName) return [{ Namespace: p.Namespace, MetricName: p.MetricName, Dimensions: asList(p.Dimensions) }];
  return asList<any>(p.Metrics)
    .filter((m) => m.MetricStat)
    .map((m) => ({ ...m.MetricStat.Metric, Dimensions: asList(m.MetricStat.Metric.Dimensions) }));
}
const watched = (t: TemplateJson, namespace: string, metricName: string) =>
  ofType(t, 'AWS::CloudWatch::Alarm')
    .flatMap(([, a]) => alarmMetrics(a))
    .filter((m) => m.Namespace === namespace && m.MetricName === metricName);
const dimension = (metric: { Dimensions: any[] }, name: string) => metric.Dimensions.find((d: any) => d.Name === name)?.Value;

/** Every statement of every IAM policy attached to `role` (a logical id). */
function roleStatements(t: TemplateJson, role: string): any[] {
  return ofType(t, 'AWS::IAM::Policy')
    .filter(([, p]) => asList(p.Properties.Roles).some((r: any) => refTo(r) === role))
    .flatMap(([, p]) => asList(p.Properties.PolicyDocument.Statement));
}

/** The topic's KMS key (logical id), if it is encrypted with one of the template's keys. */
const topicKey = (t: TemplateJson, topic: string) => arnOf(t.Resources[topic]?.Properties?.KmsMasterKeyId);

export const RULES: Rule[] = [
  {
    name: 'every alarm topic admits this account\'s CloudWatch alarms',
    source:
      'SNS: a topic policy replaces the default one (enforceSSL writes one), and CloudWatch publishes as cloudwatch.amazonaws.com; ' +
      'an encrypted topic also needs its key to admit CloudWatch (AWS docs: "Encrypting SNS topics for CloudWatch alarms")',
    check(t) {
      const violations: string[] = [];
      const topics = new Set(
        ofType(t, 'AWS::CloudWatch::Alarm').flatMap(([, a]) => asList(a.Properties.AlarmActions).map(refTo)),
      );
      for (const topic of topics) {
        if (!topic || t.Resources[topic]?.Type !== 'AWS::SNS::Topic') continue;
        const policies = ofType(t, 'AWS::SNS::TopicPolicy').filter(([, p]) => asList(p.Properties.Topics).some((x: any) => refTo(x) === topic));
        const admitted = policies.some(([, p]) =>
          asList(p.Properties.PolicyDocument.Statement).some(
            (s: any) =>
              allows(s, 'sns:Publish') &&
              servicePrincipal(s).includes('cloudwatch.amazonaws.com') &&
              s.Condition?.StringEquals?.['aws:SourceAccount'] !== undefined,
          ),
        );
        if (policies.length > 0 && !admitted) {
          violations.push(`alarm topic ${topic}: its policy does not let cloudwatch.amazonaws.com publish for this account`);
        }
        const key = topicKey(t, topic);
        if (key) {
          const keyAdmits = asList(t.Resources[key]?.Properties?.KeyPolicy?.Statement).some(
            (s: any) =>
              servicePrincipal(s).includes('cloudwatch.amazonaws.com') && allows(s, 'kms:GenerateDataKey') && allows(s, 'kms:Decrypt'),
          );
          if (!keyAdmits) violations.push(`alarm topic ${topic}: its key ${key} does not let cloudwatch.amazonaws.com encrypt`);
        }
      }
      return violations;
    },
  },
  {
    name: 'every publisher of an encrypted topic holds its key',
    source: 'SNS: publishing to a topic with a customer managed key needs kms:GenerateDataKey* and kms:Decrypt on that key (AWS docs: "Encryption at rest")',
    check(t) {
      const violations: string[] = [];
      for (const [, policy] of ofType(t, 'AWS::IAM::Policy')) {
        for (const statement of asList<any>(policy.Properties.PolicyDocument.Statement)) {
          if (!allows(statement, 'sns:Publish')) continue;
          for (const topic of asList(statement.Resource).map(refTo)) {
            const key = topic && topicKey(t, topic);
            if (!key) continue;
            for (const role of asList(policy.Properties.Roles).map(refTo)) {
              if (!role) continue;
              const onKey = roleStatements(t, role).filter((s: any) => asList(s.Resource).some((r: any) => arnOf(r) === key));
              if (!(onKey.some((s) => allows(s, 'kms:GenerateDataKey')) && onKey.some((s) => allows(s, 'kms:Decrypt')))) {
                violations.push(`role ${role} publishes to encrypted topic ${topic} without kms:GenerateDataKey* and kms:Decrypt on ${key}`);
              }
            }
          }
        }
      }
      return [...new Set(violations)];
    },
  },
  {
    name: 'every retained resource is RetainExceptOnCreate',
    source:
      'CloudFormation: DeletionPolicy RetainExceptOnCreate deletes what a failed create made, so a retry does not meet ' +
      'named leftovers ("already exists")',
    check(t) {
      return Object.entries(t.Resources)
        .filter(([, r]) => r.DeletionPolicy === 'Retain')
        .map(([id, r]) => `${r.Type} ${id} is retained even after a failed create (DeletionPolicy Retain)`);
    },
  },
  {
    name: 'every Glue table depends on its database',
    source: 'a Glue table names its database by string; without DependsOn CloudFormation may create it first (aws-cdk#26262)',
    check(t) {
      const databases = new Map(ofType(t, 'AWS::Glue::Database').map(([id, d]) => [d.Properties.DatabaseInput?.Name, id]));
      return ofType(t, 'AWS::Glue::Table').flatMap(([id, table]) => {
        const database = databases.get(table.Properties.DatabaseName) ?? refTo(table.Properties.DatabaseName);
        return database && !asList(table.DependsOn).includes(database)
          ? [`Glue table ${id} does not depend on its database ${database}`]
          : [];
      });
    },
  },
  {
    name: 'every state machine alarms on failed executions',
    source: 'Step Functions reports failures only as the ExecutionsFailed metric (AWS/States); nothing else tells anyone',
    check(t) {
      const alarmed = new Set(watched(t, 'AWS/States', 'ExecutionsFailed').map((m) => refTo(dimension(m, 'StateMachineArn'))));
      return ofType(t, 'AWS::StepFunctions::StateMachine')
        .filter(([id]) => !alarmed.has(id))
        .map(([id]) => `state machine ${id} has no ExecutionsFailed alarm`);
    },
  },
  {
    name: 'every Firehose error path is alarmed',
    source:
      'Firehose writes records whose processing failed and rows its format conversion refused under the error output prefix, ' +
      'reaching neither the archive nor an invoice; FailedConversion.Records counts the latter (AWS docs: "Monitoring with CloudWatch metrics")',
    check(t) {
      const violations: string[] = [];
      for (const [id, stream] of ofType(t, 'AWS::KinesisFirehose::DeliveryStream')) {
        const destination = stream.Properties.ExtendedS3DestinationConfiguration;
        if (!destination?.ErrorOutputPrefix) continue;
        const name = stream.Properties.DeliveryStreamName;
        if (
          destination.DataFormatConversionConfiguration?.Enabled &&
          !watched(t, 'AWS/Firehose', 'FailedConversion.Records').some((m) => dimension(m, 'DeliveryStreamName') === name)
        ) {
          violations.push(`delivery stream ${id}: no alarm on FailedConversion.Records`);
        }
        const bucket = arnOf(destination.BucketARN);
        const staticPrefix = String(destination.ErrorOutputPrefix).split('!{')[0];
        const filters = asList<any>(bucket && t.Resources[bucket]?.Properties?.MetricsConfigurations)
          .filter((m) => m.Prefix && staticPrefix.startsWith(m.Prefix))
          .map((m) => m.Id);
        const alarmed = watched(t, 'AWS/S3', 'PutRequests').some(
          (m) => refTo(dimension(m, 'BucketName')) === bucket && filters.includes(dimension(m, 'FilterId')),
        );
        if (!alarmed) violations.push(`delivery stream ${id}: nothing alarms on objects under its error prefix ${staticPrefix}`);
      }
      return violations;
    },
  },
  {
    name: "every subscription filter's role holds its permission from the start",
    source:
      'CloudWatch Logs sends a test record when a subscription filter is created and fails the create ("Could not deliver ' +
      'test message") until the role\'s permission has propagated through IAM, which is eventually consistent ' +
      '(IAM docs: "Changes that I make are not always immediately visible")',
    check(t) {
      const violations: string[] = [];
      for (const [id, filter] of ofType(t, 'AWS::Logs::SubscriptionFilter')) {
        const role = arnOf(filter.Properties.RoleArn);
        if (!role) continue;
        const inline = asList<any>(t.Resources[role]?.Properties?.Policies).flatMap((p) => asList(p.PolicyDocument.Statement));
        if (!inline.some((s) => allows(s, 'firehose:PutRecordBatch') || allows(s, 'kinesis:PutRecords'))) {
          violations.push(`subscription filter ${id}: its role ${role} does not hold the permission to deliver inline`);
        }
        const destination = arnOf(filter.Properties.DestinationArn);
        if (destination && JSON.stringify(t.Resources[role]).includes(`"${destination}"`)) {
          violations.push(`subscription filter ${id}: its role ${role} waits for the destination ${destination}, so it is created just before the filter`);
        }
      }
      return violations;
    },
  },
];

/** Every rule's violations on `template`, each prefixed with its rule. */
export function violations(template: TemplateJson): string[] {
  return RULES.flatMap((rule) => rule.check(template).map((v) => `${rule.name}: ${v}`));
}
