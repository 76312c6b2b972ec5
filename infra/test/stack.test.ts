/**
 * The template of an environment: every resource the manual (docs/src/deploy.md) promises, with the properties that matter,
 * least-privilege roles, and no cdk-nag error.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { Match, type Template } from 'aws-cdk-lib/assertions';
import { MeterStack, PARKED_REFRESH_MINUTES } from '../lib/meter-stack';
import { SQL_DIR } from '../lib/pipeline';
import { ATHENA_RECONCILE_MEMORY_MIB, LAMBDA_MAX_MEMORY_MIB, ROLLUP_BASE_MIB, ROLLUP_BYTES_PER_ROW, ROLLUP_HEADROOM, largestLocalDay } from '../lib/sizing';
import { newApp, settings, synth, tempDir } from './helpers';

const prod = synth(settings('prod', { protectData: true, logRetentionDays: 365 }));
const staging = synth(settings('staging', { protectData: false, logRetentionDays: 30, alarmEmail: 'ops@example.com' }));

type Resource = { Type: string; Properties: any; DeletionPolicy?: string };
const resources = (t = prod.template, type?: string): [string, Resource][] =>
  Object.entries(t.toJSON().Resources as Record<string, Resource>).filter(([, r]) => !type || r.Type === type);
const policiesOf = (roleLogicalIdPrefix: string) =>
  resources(prod.template, 'AWS::IAM::Policy')
    .filter(([, p]) => p.Properties.Roles.some((r: any) => r.Ref.startsWith(roleLogicalIdPrefix)))
    .flatMap(([, p]) => p.Properties.PolicyDocument.Statement);

describe('data', () => {
  it('keeps keys in ApiKeys with the hashed-key index, encrypted, recoverable and retained', () => {
    prod.template.hasResource('AWS::DynamoDB::Table', {
      DeletionPolicy: 'RetainExceptOnCreate',
      Properties: {
        TableName: 'ApiKeys-prod',
        BillingMode: 'PAY_PER_REQUEST',
        KeySchema: [{ AttributeName: 'id', KeyType: 'HASH' }],
        SSESpecification: { SSEEnabled: true },
        PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
        DeletionProtectionEnabled: true,
        GlobalSecondaryIndexes: [
          { IndexName: 'hashedKey-index', KeySchema: [{ AttributeName: 'hashedKey', KeyType: 'HASH' }], Projection: { ProjectionType: 'KEYS_ONLY' } },
        ],
      },
    });
  });

  it('keeps counters per key and day with a TTL for markers; deletion protection only where asked', () => {
    const counters = {
      TableName: 'UsageCounters-prod',
      KeySchema: [{ AttributeName: 'keyId', KeyType: 'HASH' }, { AttributeName: 'day', KeyType: 'RANGE' }],
      TimeToLiveSpecification: { AttributeName: 'expiresAt', Enabled: true },
      PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
      DeletionProtectionEnabled: true,
    };
    prod.template.hasResourceProperties('AWS::DynamoDB::Table', counters);
    staging.template.hasResourceProperties('AWS::DynamoDB::Table', {
      ...counters, TableName: 'UsageCounters-staging', DeletionProtectionEnabled: false,
    });
  });

  it('makes every bucket private, encrypted, TLS-only and retained', () => {
    const buckets = resources(prod.template, 'AWS::S3::Bucket');
    assert.equal(buckets.length, 4, 'archive, reports, Athena results, access logs');
    for (const [id, bucket] of buckets) {
      assert.equal(bucket.DeletionPolicy, 'RetainExceptOnCreate', id);
      assert.deepEqual(bucket.Properties.PublicAccessBlockConfiguration, {
        BlockPublicAcls: true, BlockPublicPolicy: true, IgnorePublicAcls: true, RestrictPublicBuckets: true,
      }, id);
      assert.ok(bucket.Properties.BucketEncryption, id);
      const policy = resources(prod.template, 'AWS::S3::BucketPolicy').find(([, p]) => p.Properties.Bucket.Ref === id);
      assert.ok(policy, `${id} has no bucket policy`);
      assert.ok(policy[1].Properties.PolicyDocument.Statement.some((s: any) =>
        s.Effect === 'Deny' && s.Condition?.Bool?.['aws:SecureTransport'] === 'false'), `${id} accepts plain HTTP`);
    }
  });

  it('moves the archive to cheaper classes and versions the archive and the invoices', () => {
    prod.template.hasResourceProperties('AWS::S3::Bucket', {
      VersioningConfiguration: { Status: 'Enabled' },
      LifecycleConfiguration: {
        Rules: Match.arrayWith([Match.objectLike({
          Prefix: 'usage/',
          Transitions: [
            { StorageClass: 'STANDARD_IA', TransitionInDays: 30 },
            { StorageClass: 'GLACIER_IR', TransitionInDays: 180 },
          ],
        })]),
      },
    });
    const versioned = resources(prod.template, 'AWS::S3::Bucket').filter(([, b]) => b.Properties.VersioningConfiguration);
    assert.deepEqual(versioned.map(([id]) => id.replace(/[0-9A-F]{8}$/, '')).sort(), ['DataArchive', 'DataReports']);
  });

  it('encrypts the four topics with a rotated key that CloudWatch alarms may use', () => {
    const topics = resources(prod.template, 'AWS::SNS::Topic');
    assert.deepEqual(topics.map(([, t]) => t.Properties.TopicName).sort(), [
      'meter-prod-alerts', 'meter-prod-finance', 'meter-prod-revocation', 'meter-prod-usagealerts',
    ]);
    for (const [, topic] of topics) assert.ok(topic.Properties.KmsMasterKeyId, topic.Properties.TopicName);
    prod.template.hasResourceProperties('AWS::KMS::Key', {
      EnableKeyRotation: true,
      KeyPolicy: { Statement: Match.arrayWith([Match.objectLike({ Principal: { Service: 'cloudwatch.amazonaws.com' } })]) },
    });
    staging.template.hasResourceProperties('AWS::SNS::Subscription', { Protocol: 'email', Endpoint: 'ops@example.com' });
  });
});

describe('functions', () => {
  const functions = resources(prod.template, 'AWS::Lambda::Function');

  it('runs seven pre-built functions on provided.al2023, x86_64, each logging to its own group with retention', () => {
    assert.deepEqual(functions.map(([, f]) => f.Properties.FunctionName).sort(), [
      'meter-prod-archive-transformer', 'meter-prod-authorizer', 'meter-prod-cache-invalidator',
      'meter-prod-example-backend', 'meter-prod-monthly-report', 'meter-prod-reconcile-job', 'meter-prod-report-links',
    ]);
    for (const [id, fn] of functions) {
      assert.equal(fn.Properties.Runtime, 'provided.al2023', id);
      assert.deepEqual(fn.Properties.Architectures, ['x86_64'], id);
      assert.equal(fn.Properties.Handler, 'bootstrap', id);
      const group = fn.Properties.LoggingConfig.LogGroup.Ref;
      const logGroup = prod.template.toJSON().Resources[group];
      assert.equal(logGroup.Properties.LogGroupName, `/aws/lambda/${fn.Properties.FunctionName}`);
      assert.equal(logGroup.Properties.RetentionInDays, 365);
    }
  });

  it('configures each function from its environment as its binary documents', () => {
    const env = (name: string) => functions.find(([, f]) => f.Properties.FunctionName === `meter-prod-${name}`)![1].Properties.Environment.Variables;
    assert.deepEqual(Object.keys(env('authorizer')).sort(), ['METER_IDENTITY_HEADER', 'METER_LOG', 'METER_STORE']);
    assert.deepEqual(prod.stack.resolve(env('authorizer').METER_STORE), {
      'Fn::Join': ['', ['dynamodb:keys=', { Ref: 'DataApiKeys9F300A5F' }, ',counters=', { Ref: 'DataUsageCounters2C19E926' }]],
    });
    assert.deepEqual(Object.keys(env('archive-transformer')).sort(), ['METER_ARCHIVE', 'METER_LOG', 'METER_STORE', 'METER_USAGE_ALERT_TOPIC']);
    assert.deepEqual(Object.keys(env('reconcile-job')).sort(), [
      'METER_ALERT_TOPIC', 'METER_ARCHIVE', 'METER_DRIFT_ALERT_THRESHOLD', 'METER_LOG', 'METER_RECONCILE_LOOKBACK_DAYS', 'METER_STORE',
    ]);
    assert.deepEqual(Object.keys(env('monthly-report')).sort(), [
      'METER_ARCHIVE', 'METER_FINANCE_TOPIC', 'METER_LINKS_KEY', 'METER_LINKS_URL', 'METER_LINK_EXPIRY_HOURS', 'METER_LOG',
      'METER_PRICING', 'METER_REPORTS', 'METER_STORE',
    ]);
    assert.deepEqual(Object.keys(env('report-links')).sort(), ['METER_LINKS_KEY', 'METER_LOG', 'METER_REPORTS']);
    assert.ok(JSON.stringify(env('cache-invalidator').METER_FLUSH_TARGETS).includes('rest:'));
  });

  it('sends the events an asynchronous function gives up on to its queue', () => {
    const configs = resources(prod.template, 'AWS::Lambda::EventInvokeConfig');
    assert.equal(configs.length, 3);
    for (const [id, config] of configs) {
      assert.equal(config.Properties.MaximumEventAgeInSeconds, 6 * 3600, id);
      assert.ok(config.Properties.DestinationConfig.OnFailure.Destination['Fn::GetAtt'][0].includes('Failures'), id);
    }
    prod.template.hasResourceProperties('AWS::SNS::Subscription', {
      Protocol: 'lambda',
      RedrivePolicy: { deadLetterTargetArn: Match.anyValue() },
    });
  });

  it('grants each function only the actions it calls, on the resources it calls them on', () => {
    for (const statement of resources(prod.template, 'AWS::IAM::Policy').flatMap(([, p]) => p.Properties.PolicyDocument.Statement)) {
      for (const action of [statement.Action].flat()) assert.notEqual(action, '*');
      assert.ok(!/^[a-z0-9]+:\*$/.test([statement.Action].flat().join(' ')), JSON.stringify(statement));
    }
    const authorizer = policiesOf('AuthorizerRole');
    assert.deepEqual(authorizer.flatMap((s: any) => [s.Action].flat()).sort(), [
      'dynamodb:GetItem', 'dynamodb:Query', 'logs:CreateLogStream', 'logs:PutLogEvents',
    ]);
    const query = authorizer.find((s: any) => s.Action === 'dynamodb:Query');
    assert.match(JSON.stringify(query.Resource), /index\/hashedKey-index/);
    // The transformer writes each key's open days and totals on ApiKeys, and its counters beside them.
    const onTable = (role: string, table: RegExp) =>
      policiesOf(role)
        .filter((s: any) => table.test(JSON.stringify(s.Resource)))
        .flatMap((s: any) => [s.Action].flat())
        .sort();
    assert.deepEqual(onTable('ArchiveTransformerRole', /DataApiKeys/), ['dynamodb:BatchGetItem', 'dynamodb:Scan', 'dynamodb:UpdateItem']);
    // Usage alerts: the transformer publishes them on their own topic, named in its environment.
    const publishes = policiesOf('ArchiveTransformerRole').find((s: any) => s.Action === 'sns:Publish');
    assert.match(JSON.stringify(publishes.Resource), /DataUsageAlerts/);
    assert.deepEqual(onTable('ArchiveTransformerRole', /DataUsageCounters/), ['dynamodb:PutItem', 'dynamodb:UpdateItem']);
    const transformerWrites = policiesOf('ArchiveTransformerRole').find((s: any) => s.Action === 's3:PutObject');
    assert.match(JSON.stringify(transformerWrites.Resource), /\/usage\/\*/);
    const invalidator = policiesOf('CacheInvalidatorRole').find((s: any) => s.Action === 'apigateway:DELETE');
    assert.match(JSON.stringify(invalidator.Resource), /\/restapis\/.*\/stages\/api\/cache\/authorizers/);
  });
});

describe('concurrency', () => {
  it("reserves the archive transformer's concurrency only where the environment says so", () => {
    const reserved = (t: Template) =>
      resources(t, 'AWS::Lambda::Function')
        .filter(([, f]) => f.Properties.ReservedConcurrentExecutions !== undefined)
        .map(([, f]) => [f.Properties.FunctionName, f.Properties.ReservedConcurrentExecutions]);
    assert.deepEqual(reserved(prod.template), []);
    const floor = synth(settings('floor', { transformerReservedConcurrency: 10, linksReservedConcurrency: 2 })).template;
    assert.deepEqual(reserved(floor).sort(), [['meter-floor-archive-transformer', 10], ['meter-floor-report-links', 2]]);
  });
});

describe('operators', () => {
  it("gives operators one managed policy with what meter keys, usage and report --resend-links call, on this environment's resources", () => {
    const [[, policy]] = resources(prod.template, 'AWS::IAM::ManagedPolicy');
    assert.equal(policy.Properties.ManagedPolicyName, 'meter-prod-operator');
    const statements = Object.fromEntries(policy.Properties.PolicyDocument.Statement.map((s: any) => [s.Sid, s]));
    assert.deepEqual(Object.keys(statements).sort(), [
      'Counters', 'GraceEnd', 'Keys', 'KeysByHash', 'Notices', 'NoticesKey', 'ReportFiles', 'ReportLinks', 'Reports',
    ]);
    assert.deepEqual(statements.ReportLinks.Action, 'kms:GenerateMac');
    assert.match(JSON.stringify(statements.ReportLinks.Resource), /LinksKey/);
    assert.match(JSON.stringify(statements.Keys.Resource), /DataApiKeys/);
    assert.match(JSON.stringify(statements.KeysByHash.Resource), /index\/hashedKey-index/);
    assert.match(JSON.stringify(statements.Counters.Resource), /DataUsageCounters/);
    for (const topic of [/DataRevocation/, /DataFinance/]) assert.match(JSON.stringify(statements.Notices.Resource), topic);
    assert.match(JSON.stringify(statements.GraceEnd.Resource), /GraceEnd/);
    assert.match(JSON.stringify(statements.ReportFiles.Resource), /\/reports\/\*/);
    for (const statement of Object.values(statements) as any[]) {
      assert.ok(![statement.Action].flat().some((a: string) => a === '*' || a.endsWith(':*')), statement.Sid);
      assert.ok(![statement.Resource].flat().includes('*'), statement.Sid);
    }
    prod.template.hasOutput('OperatorPolicyArn', {});
  });
});

describe('finance links', () => {
  const json = prod.template.toJSON();
  const byName = (name: string) =>
    Object.entries<any>(json.Resources).find(([, r]) => r.Type === 'AWS::Lambda::Function' && r.Properties.FunctionName === name)!;
  const statementsOf = (fnId: string) => {
    const role = json.Resources[fnId].Properties.Role['Fn::GetAtt'][0];
    return Object.values<any>(json.Resources)
      .filter((r) => r.Type === 'AWS::IAM::Policy' && r.Properties.Roles.some((x: any) => x.Ref === role))
      .flatMap((p) => p.Properties.PolicyDocument.Statement);
  };

  it('signs them with an HMAC key in KMS and serves them from a function URL that only the link authenticates', () => {
    const [[keyId, key]] = resources(prod.template, 'AWS::KMS::Key').filter(([id]) => id.startsWith('LinksKey'));
    assert.equal(key.Properties.KeySpec, 'HMAC_256');
    assert.equal(key.Properties.KeyUsage, 'GENERATE_VERIFY_MAC');
    const [linksId] = byName('meter-prod-report-links');
    const [reportId, report] = byName('meter-prod-monthly-report');
    const [[, url]] = resources(prod.template, 'AWS::Lambda::Url');
    assert.equal(url.Properties.AuthType, 'NONE');
    assert.deepEqual(url.Properties.TargetFunctionArn, { 'Fn::GetAtt': [linksId, 'Arn'] });
    assert.deepEqual(report.Properties.Environment.Variables.METER_LINKS_URL, { 'Fn::GetAtt': [resources(prod.template, 'AWS::Lambda::Url')[0][0], 'FunctionUrl'] });
    assert.deepEqual(report.Properties.Environment.Variables.METER_LINKS_KEY, { 'Fn::GetAtt': [keyId, 'Arn'] });
    // Lambda wants both permissions for a public function URL made since October 2025.
    const permissions = resources(prod.template, 'AWS::Lambda::Permission').filter(
      ([, p]) => JSON.stringify(p.Properties.FunctionName).includes(linksId),
    );
    assert.deepEqual(permissions.map(([, p]) => p.Properties.Action).sort(), ['lambda:InvokeFunction', 'lambda:InvokeFunctionUrl']);
    // The report signs and the function checks, each with that one action on that one key; the
    // function reads the report files and nothing else.
    const onKey = (fnId: string) =>
      statementsOf(fnId).filter((s) => JSON.stringify(s.Resource).includes(keyId)).map((s) => s.Action);
    assert.deepEqual(onKey(reportId), ['kms:GenerateMac']);
    assert.deepEqual(onKey(linksId), ['kms:VerifyMac']);
    const reads = statementsOf(linksId).filter((s) => !JSON.stringify(s.Action).includes('logs:'));
    assert.deepEqual(reads.map((s) => s.Action).sort(), ['kms:VerifyMac', 's3:GetObject', 's3:ListBucket']);
    prod.template.hasOutput('LinksUrl', {});
    prod.template.hasOutput('LinksKeyArn', {});
  });
});

describe('the realtime and archive path', () => {
  it('subscribes the usage log group to Firehose with a filter that matches all three line formats', () => {
    const filters = resources(prod.template, 'AWS::Logs::SubscriptionFilter');
    assert.equal(filters.length, 1, 'one subscription (a log group takes two at most)');
    assert.equal(filters[0][1].Properties.FilterPattern, '"API_USAGE"');
    assert.equal(filters[0][1].Properties.FilterName, 'meter-prod-usage');
    assert.match(JSON.stringify(filters[0][1].Properties.LogGroupName), /ExampleBackendLogs/);
  });

  it("transforms with Firehose's processor buffer as deployed, partitions by day and writes Parquet", () => {
    const processor = resources(prod.template, 'AWS::KinesisFirehose::DeliveryStream')[0][1].Properties
      .ExtendedS3DestinationConfiguration.ProcessingConfiguration.Processors[0].Parameters;
    assert.equal(processor.find((p: any) => p.ParameterName === 'BufferSizeInMBs').ParameterValue, '3');
    prod.template.hasResourceProperties('AWS::KinesisFirehose::DeliveryStream', {
      DeliveryStreamName: 'meter-prod-usage',
      ExtendedS3DestinationConfiguration: Match.objectLike({
        Prefix: 'usage/year=!{partitionKeyFromLambda:year}/month=!{partitionKeyFromLambda:month}/day=!{partitionKeyFromLambda:day}/',
        ErrorOutputPrefix: Match.stringLikeRegexp('^firehose-errors/'),
        BufferingHints: { IntervalInSeconds: 900, SizeInMBs: 128 },
        DynamicPartitioningConfiguration: { Enabled: true, RetryOptions: { DurationInSeconds: 7200 } },
        ProcessingConfiguration: {
          Enabled: true,
          Processors: [{
            Type: 'Lambda',
            Parameters: Match.arrayWith([{ ParameterName: 'BufferIntervalInSeconds', ParameterValue: '45' }]),
          }],
        },
        DataFormatConversionConfiguration: Match.objectLike({
          Enabled: true,
          OutputFormatConfiguration: { Serializer: { ParquetSerDe: Match.objectLike({ Compression: 'SNAPPY' }) } },
          SchemaConfiguration: Match.objectLike({ DatabaseName: 'meter_prod' }),
        }),
      }),
    });
  });

  it('describes the archive as a Glue table with partition projection, so no crawler is needed', () => {
    prod.template.hasResourceProperties('AWS::Glue::Table', {
      DatabaseName: 'meter_prod',
      TableInput: Match.objectLike({
        Name: 'usage',
        PartitionKeys: [{ Name: 'year', Type: 'int' }, { Name: 'month', Type: 'int' }, { Name: 'day', Type: 'int' }],
        Parameters: Match.objectLike({ 'projection.enabled': 'true', 'projection.day.digits': '2' }),
        StorageDescriptor: Match.objectLike({
          Columns: [
            { Name: 'request_id', Type: 'string' }, { Name: 'key_id', Type: 'string' }, { Name: 'ts', Type: 'timestamp' },
            { Name: 'status_code', Type: 'int' }, { Name: 'should_count', Type: 'boolean' }, { Name: 'method', Type: 'string' },
            { Name: 'resource', Type: 'string' }, { Name: 'latency_ms', Type: 'int' },
          ],
        }),
      }),
    });
    prod.template.hasResourceProperties('AWS::Athena::WorkGroup', {
      Name: 'meter-prod',
      WorkGroupConfiguration: Match.objectLike({ BytesScannedCutoffPerQuery: 10_000_000_000, EnforceWorkGroupConfiguration: true }),
    });
  });
  it('offers every query of notebooks/sql/ as an Athena named query in the workgroup, the rollup included', () => {
    const queries = resources(prod.template, 'AWS::Athena::NamedQuery').map(([, q]) => q.Properties);
    const files = fs.readdirSync(SQL_DIR).filter((f) => f.endsWith('.sql')).sort();
    assert.deepEqual(queries.map((q) => q.Name).sort(), files.map((f) => `meter ${f.replace('.sql', '').replace(/_/g, ' ')}`).sort());
    for (const query of queries) {
      assert.equal(query.Database, 'meter_prod');
      assert.equal(query.WorkGroup, 'meter-prod');
      assert.ok(query.Description.length > 10 && !query.Description.startsWith('--'), query.Description);
    }
    const rollup = queries.find((q) => q.Name === 'meter rollup');
    assert.equal(rollup.QueryString, fs.readFileSync(path.join(SQL_DIR, 'rollup.sql'), 'utf8'));
  });

  it('describes the key directory snapshot reconcile writes as the table the customer queries join', () => {
    prod.template.hasResourceProperties('AWS::Glue::Table', {
      DatabaseName: 'meter_prod',
      TableInput: Match.objectLike({
        Name: 'keys',
        StorageDescriptor: Match.objectLike({
          Location: Match.objectLike({ 'Fn::Join': Match.arrayWith([Match.arrayWith(['/usage/keys/'])]) }),
          Columns: Match.arrayWith([{ Name: 'key_id', Type: 'string' }, { Name: 'customer_email', Type: 'string' }]),
        }),
      }),
    });
  });
});

describe('the end of a rotated key\'s grace period', () => {
  it('waits until the grace end, then publishes to the revocation topic, with the state machine logged and traced', () => {
    const machines = resources(prod.template, 'AWS::StepFunctions::StateMachine').map(([, m]) => m.Properties);
    assert.equal(machines.length, 1);
    assert.equal(machines[0].StateMachineName, 'meter-prod-grace-end');
    assert.equal(machines[0].LoggingConfiguration.Level, 'ALL');
    assert.equal(machines[0].TracingConfiguration.Enabled, true);
    const definition = JSON.stringify(prod.stack.resolve(machines[0].DefinitionString));
    assert.match(definition, /TimestampPath.*\$\.graceEndsAt/);
    assert.match(definition, /arn:.*:states:::sns:publish/);
    const actions = resources(prod.template, 'AWS::IAM::Policy')
      .filter(([id]) => id.startsWith('GraceEndRole'))
      .flatMap(([, p]) => p.Properties.PolicyDocument.Statement)
      .flatMap((statement: any) => [statement.Action].flat());
    assert.ok(actions.includes('sns:Publish'), actions.join(' '));
    assert.ok(!actions.some((a: string) => a.startsWith('dynamodb:') || a.startsWith('s3:')), actions.join(' '));
    assert.ok(prod.template.toJSON().Outputs.GraceEndStateMachine);
  });
});

describe('the rollup engine of the nightly reconcile', () => {
  const reconcileEnv = (template: Template) => resources(template, 'AWS::Lambda::Function')
    .find(([, f]) => String(f.Properties.FunctionName).endsWith('-reconcile-job'))![1].Properties.Environment.Variables;
  const reconcileActions = (template: Template) => resources(template, 'AWS::IAM::Policy')
    .filter(([id]) => id.startsWith('ReconcileJob'))
    .flatMap(([, p]) => p.Properties.PolicyDocument.Statement)
    .flatMap((statement: any) => [statement.Action].flat());

  it('is local by default: no Athena permissions, and the writes beside the archive are granted', () => {
    assert.equal(reconcileEnv(prod.template).METER_ROLLUP_ENGINE, undefined);
    const actions = reconcileActions(prod.template);
    assert.ok(!actions.some((a: string) => a.startsWith('athena:')), actions.join(' '));
    assert.ok(actions.includes('s3:PutObject'), actions.join(' '));
  });

  it('runs the rollup in the workgroup with rollupEngine athena, with exactly what Athena needs', () => {
    const { template, nagErrors } = synth(settings('big', { rollupEngine: 'athena' }));
    assert.deepEqual(nagErrors, []);
    assert.deepEqual(
      [reconcileEnv(template).METER_ROLLUP_ENGINE, reconcileEnv(template).METER_ATHENA_WORKGROUP, reconcileEnv(template).METER_ATHENA_DATABASE],
      ['athena', 'meter-big', 'meter_big'],
    );
    const actions = reconcileActions(template);
    for (const action of ['athena:StartQueryExecution', 'athena:GetQueryExecution', 'athena:StopQueryExecution', 'glue:GetTable']) {
      assert.ok(actions.includes(action), action);
    }
    assert.throws(() => settings('big', { rollupEngine: 'spark' }), /rollupEngine must be "local" or "athena"/);
  });

  it('sizes the function from the busiest day by the figure reconcile measured, and refuses a day beyond one Lambda', () => {
    const rust = fs.readFileSync(path.join(__dirname, '..', '..', 'reconcile', 'src', 'engine.rs'), 'utf8');
    const constant = (name: string) => Number(new RegExp(`pub const ${name}: u64 = ([\\d_]+);`).exec(rust)?.[1].replaceAll('_', ''));
    assert.deepEqual(
      [ROLLUP_BYTES_PER_ROW, ROLLUP_BASE_MIB, ROLLUP_HEADROOM, LAMBDA_MAX_MEMORY_MIB, ATHENA_RECONCILE_MEMORY_MIB],
      ['ROLLUP_BYTES_PER_ROW', 'ROLLUP_BASE_MIB', 'ROLLUP_HEADROOM', 'LAMBDA_MAX_MEMORY_MIB', 'ATHENA_RECONCILE_MEMORY_MIB'].map(constant),
    );
    const memory = (template: Template) => resources(template, 'AWS::Lambda::Function')
      .find(([, f]) => String(f.Properties.FunctionName).endsWith('-reconcile-job'))![1].Properties.MemorySize;
    // The default (4 M events) is the same sum as reconcile's own test: 2,048 MiB.
    assert.equal(memory(prod.template), 2048);
    assert.equal(memory(synth(settings('busy', { busiestDayEvents: 20_000_000 })).template), 9408);
    assert.equal(memory(synth(settings('big', { rollupEngine: 'athena', busiestDayEvents: 99_000_000 })).template), 1024);
    assert.equal(largestLocalDay(), 21_900_000);
    assert.throws(() => settings('big', { busiestDayEvents: 99_000_000 }),
      /busiestDayEvents must be at most 21,900,000 events for a local rollup in one Lambda.*"rollupEngine": "athena"/);
  });
});


describe('schedules', () => {
  it('reconciles nightly after asynchronous retries, and reports on the 2nd after that reconcile', () => {
    const rules = Object.fromEntries(resources(prod.template, 'AWS::Events::Rule').map(([, r]) => [r.Properties.Name, r.Properties]));
    assert.equal(rules['meter-prod-nightly-reconcile'].ScheduleExpression, 'cron(0 7 * * ? *)');
    assert.equal(rules['meter-prod-monthly-report'].ScheduleExpression, 'cron(0 10 2 * ? *)');
    for (const rule of Object.values(rules) as any[]) {
      assert.equal(rule.Targets.length, 1);
      assert.ok(rule.Targets[0].DeadLetterConfig.Arn, rule.Name);
      if (rule.Name !== 'meter-prod-parked-refresh') {
        assert.equal(rule.Targets[0].RetryPolicy.MaximumEventAgeInSeconds, 6 * 3600);
      }
    }
  });

  it('brings parked usage into the key totals as often as the reconcile function says', () => {
    const rules = Object.fromEntries(resources(prod.template, 'AWS::Events::Rule').map(([, r]) => [r.Properties.Name, r.Properties]));
    const refresh = rules['meter-prod-parked-refresh'];
    const rust = fs.readFileSync(path.join(__dirname, '..', '..', 'reconcile', 'src', 'totals.rs'), 'utf8');
    const minutes = Number(/PARKED_REFRESH_MINUTES: u32 = (\d+);/.exec(rust)?.[1]);
    assert.equal(minutes, PARKED_REFRESH_MINUTES);
    assert.equal(refresh.ScheduleExpression, `rate(${minutes} minutes)`);
    assert.deepEqual(JSON.parse(refresh.Targets[0].Input), { task: 'refresh-parked' });
    assert.equal(refresh.Targets[0].RetryPolicy.MaximumRetryAttempts, 0);
    assert.ok(refresh.Targets[0].Arn['Fn::GetAtt'][0].startsWith('ReconcileJob'), JSON.stringify(refresh.Targets[0].Arn));
  });
});

describe('monitoring', () => {
  it('builds the dashboard from the functions\' EMF metrics and the services\' own', () => {
    const dashboard = resources(prod.template, 'AWS::CloudWatch::Dashboard')[0][1];
    assert.equal(dashboard.Properties.DashboardName, 'meter-api-usage-prod');
    const body = JSON.stringify(dashboard.Properties.DashboardBody);
    for (const title of ['Usage events', 'Rejects by reason', 'Realtime lag', 'Quotas', 'DynamoDB throttles', 'Drift per reconcile run', 'Firehose delivery freshness', 'Log subscription']) {
      assert.ok(body.includes(title), title);
    }
    for (const metric of ['UsageEvents', 'RejectedLines', 'RealtimeLagMs', 'QuotaRefusals', 'UsageAlertsClaimed', 'TotalAbsDrift', 'DeliveryToS3.DataFreshness', 'DeliveryErrors']) {
      assert.ok(body.includes(metric), metric);
    }
  });

  it('alarms on what an operator must act on, to the alerts topic', () => {
    const alarms = Object.fromEntries(resources(prod.template, 'AWS::CloudWatch::Alarm').map(([, a]) => [a.Properties.AlarmName, a.Properties]));
    for (const name of [
      'meter-prod-authorizer-errors', 'meter-prod-archive-transformer-errors', 'meter-prod-reconcile-job-failed-events',
      'meter-prod-drift', 'meter-prod-firehose-delivery-failed', 'meter-prod-realtime-lag', 'meter-prod-no-usage',
      'meter-prod-subscription-delivery-errors', 'meter-prod-counter-events-not-applied', 'meter-prod-usage-counters-throttled',
    ]) {
      assert.ok(alarms[name], `${name} missing (have ${Object.keys(alarms).join(', ')})`);
    }
    assert.equal(alarms['meter-prod-realtime-lag'].Threshold, 60_000);
    assert.equal(alarms['meter-prod-no-usage'].TreatMissingData, 'breaching');
    // Summed over the DestinationType dimension, whose value CloudWatch Logs does not document.
    const subscription = JSON.stringify(alarms['meter-prod-subscription-delivery-errors']);
    assert.match(subscription, /SUM\(DeliveryErrors\) FROM SCHEMA.*WHERE FilterName = 'meter-prod-usage' AND LogGroupName = /);
    assert.doesNotMatch(subscription, /"DestinationType"/);
    for (const [name, alarm] of Object.entries(alarms) as [string, any][]) {
      assert.equal(alarm.AlarmActions.length, 1, name);
      assert.match(JSON.stringify(alarm.AlarmActions[0]), /DataAlerts/, name);
    }
  });

  it('every alarm is in the manual, with what it means and what to do', () => {
    const manual = fs.readFileSync(path.join(__dirname, '..', '..', 'docs', 'src', 'deploy.md'), 'utf8');
    for (const t of [prod.template, synth(settings('x', { existingApi: { kind: 'rest', apiId: 'a1b2c3d4e5', stage: 'live' }, usageLogGroup: '/aws/lambda/x' })).template]) {
      for (const [, alarm] of resources(t, 'AWS::CloudWatch::Alarm')) {
        const generic = String(alarm.Properties.AlarmName).replace(/^meter-[a-z]+-/, 'meter-<env>-');
        assert.ok(manual.includes(`\`${generic}\``), `${generic} is not in docs/src/deploy.md`);
      }
    }
  });

  it('stays quiet on normal traffic: 401 answers, Firehose freshness, an idle environment', () => {
    const alarms = (t: Template) =>
      Object.fromEntries(resources(t, 'AWS::CloudWatch::Alarm').map(([, a]) => [a.Properties.AlarmName, a.Properties]));
    const prodAlarms = alarms(prod.template);
    // The authorizer's errors less its 401 answers, by the metric the Rust code prints.
    const authorizer = prodAlarms['meter-prod-authorizer-errors'];
    const expression = authorizer.Metrics.find((m: any) => m.Expression);
    assert.equal(expression.Expression, 'errors - FILL(answers, 0)');
    const answers = authorizer.Metrics.find((m: any) => m.Id === 'answers').MetricStat.Metric;
    const rust = fs.readFileSync(path.join(__dirname, '..', '..', 'authorizer', 'src', 'lambda.rs'), 'utf8');
    assert.ok(rust.includes(`pub const UNAUTHORIZED_ANSWERS: &str = "${answers.MetricName}";`), answers.MetricName);
    assert.deepEqual(answers.Dimensions, [{ Name: 'Function', Value: 'authorizer' }]);
    assert.ok(rust.includes('pub const NAME: &str = "authorizer";'));
    // 1.5 times the 15-minute buffer, and five minutes on top.
    assert.equal(prodAlarms['meter-prod-archive-stale'].Threshold, 1650);
    // An environment that may sit idle turns the "no usage" alarm off.
    const idle = synth(settings('idle', { noUsageAlarmHours: 0 })).template;
    assert.equal(alarms(idle)['meter-idle-no-usage'], undefined);
    assert.ok(prodAlarms['meter-prod-no-usage']);
  });
});

describe('the example API', () => {
  it('puts every route behind the authorizer, whose result API Gateway caches for 30 s', () => {
    prod.template.hasResourceProperties('AWS::ApiGateway::Authorizer', {
      Type: 'REQUEST', IdentitySource: 'method.request.header.x-api-key', AuthorizerResultTtlInSeconds: 30,
    });
    const methods = resources(prod.template, 'AWS::ApiGateway::Method');
    assert.ok(methods.length >= 1);
    for (const [id, method] of methods) assert.equal(method.Properties.AuthorizationType, 'CUSTOM', id);
    prod.template.hasResourceProperties('AWS::ApiGateway::Stage', {
      StageName: 'api', AccessLogSetting: Match.objectLike({ DestinationArn: Match.anyValue() }),
    });
  });
});

describe('an existing API instead of the example', () => {
  for (const kind of ['rest', 'http'] as const) {
    it(`attaches the authorizer to an existing ${kind} API, flushes its stage and reads its log group`, () => {
      const { template, nagErrors } = synth(settings('edge', {
        existingApi: { kind, apiId: 'a1b2c3d4e5', stage: 'live' },
        usageLogGroup: '/aws/lambda/orders-api',
      }));
      assert.deepEqual(nagErrors, []);
      assert.equal(resources(template, 'AWS::ApiGateway::RestApi').length, 0);
      assert.equal(resources(template, 'AWS::Lambda::Function').length, 6);
      const type = kind === 'rest' ? 'AWS::ApiGateway::Authorizer' : 'AWS::ApiGatewayV2::Authorizer';
      template.hasResourceProperties(type, kind === 'rest'
        ? { RestApiId: 'a1b2c3d4e5', AuthorizerResultTtlInSeconds: 30 }
        : { ApiId: 'a1b2c3d4e5', AuthorizerResultTtlInSeconds: 30, EnableSimpleResponses: true, AuthorizerPayloadFormatVersion: '2.0' });
      template.hasResourceProperties('AWS::Lambda::Function', {
        FunctionName: 'meter-edge-cache-invalidator',
        Environment: { Variables: Match.objectLike({ METER_FLUSH_TARGETS: `${kind}:a1b2c3d4e5/live` }) },
      });
      template.hasResourceProperties('AWS::Logs::SubscriptionFilter', { LogGroupName: '/aws/lambda/orders-api' });
      const collection = kind === 'rest' ? 'restapis' : 'apis';
      assert.ok(JSON.stringify(template.toJSON()).includes(`::/${collection}/a1b2c3d4e5/stages/live/cache/authorizers`));
    });
  }
});

describe('cdk-nag', () => {
  it('finds no error in any environment (each acknowledgement carries its reason in code)', () => {
    assert.deepEqual(prod.nagErrors, []);
    assert.deepEqual(staging.nagErrors, []);
  });
});

describe('building the app', () => {
  it('says how to build the Lambdas when their zips are missing', () => {
    const app = newApp();
    assert.throws(
      () => new MeterStack(app, 'meter-x', { settings: settings('x'), lambdaDir: tempDir('none-') }),
      /bootstrap\.zip is missing: build the Lambdas first \(scripts\/build-lambdas\)/,
    );
  });
});
