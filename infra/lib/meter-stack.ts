/**
 * One environment of meter in one region: everything the manual's "Deploy to AWS" (docs/src/deploy.md) promises.
 */
import { Aspects, CfnDeletionPolicy, CfnOutput, CfnResource, Duration, type IAspect, Stack, type StackProps } from 'aws-cdk-lib';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import type { Construct } from 'constructs';
import { EXAMPLE_STAGE, ExampleApi, ExistingApiAuthorizer, type FlushTarget, KEY_HEADER } from './api';
import { ARCHIVE_PREFIX, HASHED_KEY_INDEX, MeterData } from './data';
import { type Binary, MeterFunction } from './functions';
import { Monitoring } from './monitoring';
import { ATHENA_RECONCILE_MEMORY_MIB, localRollupMemoryMiB } from './sizing';
import { acknowledge, arnToken } from './nag';
import { ArchivePipeline, pipelineNames } from './pipeline';
import type { EnvironmentSettings } from './settings';

/** Where the monthly report reads its pricing (scripts/deploy uploads the environment's file there). */
export const PRICING_KEY = 'pricing/pricing.toml';
/** How often parked usage is brought into the key totals: `PARKED_REFRESH_MINUTES` in
 * reconcile/src/totals.rs, which states the freshness it gives (the infra tests hold the two equal). */
export const PARKED_REFRESH_MINUTES = 10;
/** The monthly report's prefix in the reports bucket. */
export const REPORTS_PREFIX = 'reports';

/**
 * Every resource the stack retains (tables, buckets, the topic key, log groups, whatever a construct
 * retains by default) is retained on delete and on replacement, but not after a failed first create:
 * CloudFormation's `RetainExceptOnCreate`. A retained, named resource left by a failed create would
 * make every retry fail with "already exists" until someone deleted it by hand.
 */
export class RetainExceptOnCreate implements IAspect {
  visit(node: import('constructs').IConstruct): void {
    if (node instanceof CfnResource && node.cfnOptions.deletionPolicy === CfnDeletionPolicy.RETAIN) {
      node.cfnOptions.deletionPolicy = CfnDeletionPolicy.RETAIN_EXCEPT_ON_CREATE;
    }
  }
}

export interface MeterStackProps extends StackProps {
  readonly settings: EnvironmentSettings;
  /** The folder of cargo-lambda's zips (`<binary>/bootstrap.zip`). */
  readonly lambdaDir: string;
}

export class MeterStack extends Stack {
  readonly data: MeterData;
  readonly functions: Record<string, MeterFunction>;
  readonly pipeline: ArchivePipeline;
  readonly monitoring: Monitoring;
  readonly exampleApi?: ExampleApi;

  constructor(scope: Construct, id: string, props: MeterStackProps) {
    super(scope, id, props);
    Aspects.of(this).add(new RetainExceptOnCreate());
    const { settings } = props;
    const data = (this.data = new MeterData(this, 'Data', settings));
    const store = `dynamodb:keys=${data.apiKeys.tableName},counters=${data.usageCounters.tableName}`;
    const archive = `s3://${data.archive.bucketName}/${ARCHIVE_PREFIX}`;
    const logRetention = settings.logRetentionDays as logs.RetentionDays;
    const fn = (
      id: string,
      binary: Binary,
      description: string,
      options: {
        memoryMiB: number;
        timeout: Duration;
        environment?: Record<string, string>;
        asynchronous?: boolean;
        reservedConcurrency?: number;
      },
    ) =>
      new MeterFunction(this, id, {
        binary,
        functionName: `meter-${settings.name}-${binary}`,
        lambdaDir: props.lambdaDir,
        description,
        logRetention,
        environment: options.environment ?? {},
        memoryMiB: options.memoryMiB,
        timeout: options.timeout,
        asynchronous: options.asynchronous,
        reservedConcurrency: options.reservedConcurrency,
      });

    // --- the functions -------------------------------------------------------------------------------
    const storeAndArchive = { METER_STORE: store, METER_ARCHIVE: archive };
    // The scheduled jobs: a Lambda's longest run, invoked asynchronously. The reconcile function's
    // memory follows the busiest day's rollup (lib/sizing.ts); the report's reads a month's rollups.
    const job = { memoryMiB: 2048, timeout: Duration.minutes(15), asynchronous: true };
    const reconcileMemoryMiB = settings.rollupEngine === 'athena'
      ? ATHENA_RECONCILE_MEMORY_MIB
      : localRollupMemoryMiB(settings.busiestDayEvents)!;
    const authorizer = fn('Authorizer', 'authorizer', 'Checks API keys for API Gateway (30 s cache, instant revocation)', {
      memoryMiB: 512,
      timeout: Duration.seconds(10),
      environment: { METER_STORE: store, METER_IDENTITY_HEADER: KEY_HEADER },
    });
    const transformer = fn('ArchiveTransformer', 'archive-transformer',
      "Firehose's transformation: archive rows from CloudWatch Logs records, and the realtime counters", {
        memoryMiB: 1024,
        // Firehose waits at most 5 minutes for a transformation.
        timeout: Duration.minutes(5),
        environment: { ...storeAndArchive, METER_USAGE_ALERT_TOPIC: data.usageAlertsTopic.topicArn },
        reservedConcurrency: settings.transformerReservedConcurrency || undefined,
      });
    // The pipeline's names, known before it exists: the reconcile job's Athena settings and grants use them.
    const names = pipelineNames(settings.name);
    const reconcile = fn('ReconcileJob', 'reconcile-job', 'Nightly: recomputes the counters from the archive and corrects drift', {
      ...job,
      memoryMiB: reconcileMemoryMiB,
      environment: {
        ...storeAndArchive,
        METER_RECONCILE_LOOKBACK_DAYS: String(settings.reconcileLookbackDays),
        METER_ALERT_TOPIC: data.alertsTopic.topicArn,
        METER_DRIFT_ALERT_THRESHOLD: String(settings.driftAlarmThreshold),
        ...(settings.rollupEngine === 'athena'
          ? {
            METER_ROLLUP_ENGINE: 'athena',
            METER_ATHENA_WORKGROUP: names.workgroup,
            METER_ATHENA_DATABASE: names.database,
          }
          : {}),
      },
    });
    // Finance links that live as long as the message says (reports/src/links.rs): each names its file
    // and expiry with an HMAC by this key, which never leaves KMS, and points at the report-links
    // function URL, which checks it and redirects to a presigned link it signs that moment. Presigned
    // links alone die with the report function's role credentials, within hours.
    const linksKey = new kms.Key(this, 'LinksKey', {
      description: `meter-${settings.name}: signs the report links in the finance message (HMAC)`,
      keySpec: kms.KeySpec.HMAC_256,
      keyUsage: kms.KeyUsage.GENERATE_VERIFY_MAC,
    });
    const reportsLocation = `s3://${data.reports.bucketName}/${REPORTS_PREFIX}`;
    const links = fn('ReportLinks', 'report-links', "Finance links: checks a signed link's signature and expiry, redirects to the report file", {
      memoryMiB: 256,
      timeout: Duration.seconds(10),
      environment: { METER_REPORTS: reportsLocation, METER_LINKS_KEY: linksKey.keyArn },
      reservedConcurrency: settings.linksReservedConcurrency || undefined,
    });
    // Public: the link's HMAC is its authentication (checked before anything is read), as a
    // presigned link's signature is.
    const linksUrl = links.function.addFunctionUrl({ authType: lambda.FunctionUrlAuthType.NONE });
    const report = fn('MonthlyReport', 'monthly-report', "Monthly: issues last month's invoices and tells finance", {
      ...job,
      environment: {
        ...storeAndArchive,
        METER_REPORTS: reportsLocation,
        METER_PRICING: `s3://${data.reports.bucketName}/${PRICING_KEY}`,
        METER_FINANCE_TOPIC: data.financeTopic.topicArn,
        METER_LINKS_URL: linksUrl.url,
        METER_LINKS_KEY: linksKey.keyArn,
        METER_LINK_EXPIRY_HOURS: '72',
      },
    });

    // --- where the authorizer sits, and whose caches a revocation flushes ------------------------------
    const flushTargets: FlushTarget[] = [];
    let backend: MeterFunction | undefined;
    if (settings.exampleApi) {
      backend = fn('ExampleBackend', 'example-backend', 'The example API: answers and prints one usage line per request', {
        memoryMiB: 128,
        timeout: Duration.seconds(5),
      });
      this.exampleApi = new ExampleApi(this, 'ExampleApi', { settings, authorizer: authorizer.function, backend: backend.function });
      flushTargets.push(this.exampleApi.flushTarget);
    }
    let existing: ExistingApiAuthorizer | undefined;
    if (settings.existingApi) {
      existing = new ExistingApiAuthorizer(this, 'ExistingApi', settings.existingApi, settings, authorizer.function);
      flushTargets.push(existing.flushTarget);
    }
    const invalidator = fn('CacheInvalidator', 'cache-invalidator', "On revocation: flushes API Gateway's authorizer caches", {
      memoryMiB: 128,
      timeout: Duration.seconds(60),
      asynchronous: true,
      environment: { METER_FLUSH_TARGETS: flushTargets.map((target) => target.spec).join(',') },
    });
    data.revocationTopic.addSubscription(
      new subscriptions.LambdaSubscription(invalidator.function, { deadLetterQueue: invalidator.failures }),
    );

    // --- least privilege: each function gets the actions it calls, on the resources it calls them on ---
    const allow = (target: MeterFunction, actions: string[], resources: string[]) =>
      target.function.addToRolePolicy(new iam.PolicyStatement({ actions, resources }));
    const keys = [data.apiKeys.tableArn];
    const keysIndex = [`${data.apiKeys.tableArn}/index/${HASHED_KEY_INDEX}`];
    const counters = [data.usageCounters.tableArn];
    allow(authorizer, ['dynamodb:GetItem'], [...keys, ...counters]);
    allow(authorizer, ['dynamodb:Query'], keysIndex);
    allow(invalidator, ['apigateway:DELETE'], flushTargets.map((target) => target.cacheArn));
    // Reads which keys exist; writes each key's open days and totals (one UpdateItem per key and buffer).
    // Scan: a customer's keys, looked for once per customer and month when a hard quota is passed.
    allow(transformer, ['dynamodb:BatchGetItem', 'dynamodb:Scan', 'dynamodb:UpdateItem'], keys);
    data.usageAlertsTopic.grantPublish(transformer.function);
    allow(transformer, ['dynamodb:UpdateItem', 'dynamodb:PutItem'], counters);
    allow(transformer, ['s3:PutObject'], [data.archive.arnForObjects(`${ARCHIVE_PREFIX}/*`)]);
    allow(reconcile, ['dynamodb:GetItem', 'dynamodb:Query', 'dynamodb:Scan', 'dynamodb:UpdateItem', 'dynamodb:BatchGetItem', 'dynamodb:ConditionCheckItem'], keys);
    allow(reconcile, ['dynamodb:GetItem', 'dynamodb:Query', 'dynamodb:UpdateItem', 'dynamodb:PutItem', 'dynamodb:BatchWriteItem', 'dynamodb:DeleteItem', 'dynamodb:ConditionCheckItem'], counters);
    allow(reconcile, ['s3:ListBucket'], [data.archive.bucketArn]);
    allow(reconcile, ['s3:GetObject'], [data.archive.arnForObjects(`${ARCHIVE_PREFIX}/*`)]);
    // What each run writes beside the archive: the day rollups, the drift report, the key directory.
    const besideArchive = ['rollups', 'drift', 'keys'];
    allow(reconcile, ['s3:PutObject'], besideArchive.map((dir) => data.archive.arnForObjects(`${ARCHIVE_PREFIX}/${dir}/*`)));
    acknowledge(reconcile.function.role!, ...besideArchive.map((dir) => ({
      id: `AwsSolutions-IAM5[Resource::${arnToken(data.archive)}/${ARCHIVE_PREFIX}/${dir}/*]`,
      reason: `Each run writes its ${dir} files under this folder, named by day or run`,
    })));
    if (settings.rollupEngine === 'athena') {
      const { account, region, partition } = Stack.of(this);
      allow(reconcile, ['athena:StartQueryExecution', 'athena:GetQueryExecution', 'athena:StopQueryExecution'], [
        `arn:${partition}:athena:${region}:${account}:workgroup/${names.workgroup}`,
      ]);
      allow(reconcile, ['glue:GetDatabase', 'glue:GetTable', 'glue:GetPartitions'], [
        `arn:${partition}:glue:${region}:${account}:catalog`,
        `arn:${partition}:glue:${region}:${account}:database/${names.database}`,
        `arn:${partition}:glue:${region}:${account}:table/${names.database}/${names.table}`,
      ]);
      // Athena reads the archive and writes the result with the caller's permissions.
      allow(reconcile, ['s3:GetBucketLocation', 's3:ListBucket'], [data.archive.bucketArn, data.athenaResults.bucketArn]);
      allow(reconcile, ['s3:GetObject', 's3:PutObject', 's3:AbortMultipartUpload'], [data.athenaResults.arnForObjects('results/*')]);
      acknowledge(reconcile.function.role!, {
        id: `AwsSolutions-IAM5[Resource::${arnToken(data.athenaResults)}/results/*]`,
        reason: 'Athena names each result file after its query id, under the workgroup\'s result prefix',
      });
    }
    data.alertsTopic.grantPublish(reconcile.function);
    allow(report, ['dynamodb:GetItem', 'dynamodb:Query', 'dynamodb:Scan'], [...keys, ...counters]);
    allow(report, ['s3:ListBucket'], [data.archive.bucketArn, data.reports.bucketArn]);
    allow(report, ['s3:GetObject'], [data.archive.arnForObjects(`${ARCHIVE_PREFIX}/*`)]);
    allow(report, ['s3:GetObject', 's3:PutObject'], [data.reports.arnForObjects(`${REPORTS_PREFIX}/*`)]);
    allow(report, ['s3:GetObject'], [data.reports.arnForObjects(PRICING_KEY)]);
    data.financeTopic.grantPublish(report.function);
    linksKey.grant(report.function, 'kms:GenerateMac');
    linksKey.grant(links.function, 'kms:VerifyMac');
    // ListBucket: without it S3 answers a missing file with 403, and the function could not say 404.
    allow(links, ['s3:ListBucket'], [data.reports.bucketArn]);
    allow(links, ['s3:GetObject'], [data.reports.arnForObjects(`${REPORTS_PREFIX}/*`)]);
    const prefixReason = (bucket: string) =>
      `Objects under the ${bucket} prefix are named by day and file as they are written: the prefix is the narrowest scope`;
    for (const target of [transformer, reconcile, report]) {
      acknowledge(target.function.role!, {
        id: `AwsSolutions-IAM5[Resource::${arnToken(data.archive)}/${ARCHIVE_PREFIX}/*]`,
        reason: prefixReason('archive'),
      });
    }
    for (const target of [report, links]) {
      acknowledge(target.function.role!, {
        id: `AwsSolutions-IAM5[Resource::${arnToken(data.reports)}/${REPORTS_PREFIX}/*]`,
        reason: prefixReason('reports'),
      });
    }
    for (const target of [transformer, reconcile, report]) {
      acknowledge(target.function.role!, {
        id: 'AwsSolutions-IAM5[Action::kms:GenerateDataKey*]',
        reason: 'Publishing to an encrypted topic needs a data key from its KMS key (granted on that key only)',
      });
    }

    // --- the end of a rotated key's grace period ----------------------------------------------------------
    // `meter keys rotate` starts an execution that waits until the old key's grace period ends and then
    // publishes to the revocation topic: the invalidator flushes API Gateway's authorizer caches, as for
    // a revocation (warm authorizers stop serving the key on their own). A Wait resumes within about a
    // second; EventBridge Scheduler fires within the minute, longer than API Gateway's 30-second cache.
    const graceEndLogs = new logs.LogGroup(this, 'GraceEndLogs', {
      logGroupName: `/aws/vendedlogs/states/meter-${settings.name}-grace-end`,
      retention: settings.logRetentionDays as logs.RetentionDays,
    });
    const graceEnd = new sfn.StateMachine(this, 'GraceEnd', {
      stateMachineName: `meter-${settings.name}-grace-end`,
      comment: "Flushes API Gateway's authorizer caches when a rotated key's grace period ends",
      definitionBody: sfn.DefinitionBody.fromChainable(
        new sfn.Wait(this, 'UntilTheGraceEnds', { time: sfn.WaitTime.timestampPath('$.graceEndsAt') }).next(
          new tasks.SnsPublish(this, 'FlushTheCaches', {
            topic: data.revocationTopic,
            subject: "meter: a rotated key's grace period ended",
            message: sfn.TaskInput.fromText(sfn.JsonPath.jsonToString(sfn.JsonPath.objectAt('$'))),
          }),
        ),
      ),
      logs: { destination: graceEndLogs, level: sfn.LogLevel.ALL },
      tracingEnabled: true,
    });
    // The topic is encrypted: publishing takes its key too, which the task's own grant leaves out.
    data.topicKey.grant(graceEnd, 'kms:GenerateDataKey*', 'kms:Decrypt');
    acknowledge(graceEnd.role, {
      id: 'AwsSolutions-IAM5[Action::kms:GenerateDataKey*]',
      reason: "SNS encrypts each message with a fresh data key of the topic's key: the action is a family, scoped to that one key",
    });
    acknowledge(graceEnd.role, {
      id: 'AwsSolutions-IAM5[Resource::*]',
      reason: "Step Functions' log delivery and X-Ray trace segments have no resource scope (CloudWatch Logs and X-Ray APIs)",
    });

    // --- the realtime and archive path ---------------------------------------------------------------
    const usageLogGroup = settings.usageLogGroup
      ? logs.LogGroup.fromLogGroupName(this, 'ApiLogGroup', settings.usageLogGroup)
      : backend!.logGroup;
    this.pipeline = new ArchivePipeline(this, 'Archive', { settings, data, transformer: transformer.function, usageLogGroup });

    // --- schedules -------------------------------------------------------------------------------------
    // Reconcile runs after Lambda's asynchronous retries (up to 6 h) of the last deliveries of the day;
    // the lookback days re-check what CloudWatch Logs redelivers later (up to 24 h).
    new events.Rule(this, 'NightlyReconcileSchedule', {
      ruleName: `meter-${settings.name}-nightly-reconcile`,
      description: `Reconciles the last ${settings.reconcileLookbackDays} days at ${settings.reconcileHourUtc}:00 UTC`,
      schedule: events.Schedule.cron({ minute: '0', hour: String(settings.reconcileHourUtc) }),
      targets: [new targets.LambdaFunction(reconcile.function, {
        deadLetterQueue: reconcile.failures, retryAttempts: 3, maxEventAge: Duration.hours(6),
      })],
    });
    // Parked usage (single calls gathered in shared items) reaches the keys' lifetime totals through
    // this refresh: every parked item read once, one write per key whose parked usage moved. A failed
    // run is not retried (the next one comes in minutes) but lands in the queue, which alarms.
    new events.Rule(this, 'ParkedRefreshSchedule', {
      ruleName: `meter-${settings.name}-parked-refresh`,
      description: `Brings parked usage into the key totals every ${PARKED_REFRESH_MINUTES} minutes`,
      schedule: events.Schedule.rate(Duration.minutes(PARKED_REFRESH_MINUTES)),
      targets: [new targets.LambdaFunction(reconcile.function, {
        event: events.RuleTargetInput.fromObject({ task: 'refresh-parked' }),
        deadLetterQueue: reconcile.failures, retryAttempts: 0, maxEventAge: Duration.minutes(PARKED_REFRESH_MINUTES),
      })],
    });
    // The 2nd of the month, after that morning's reconcile has settled the month's last day with a full
    // day of CloudWatch Logs' redeliveries behind it: an issued invoice is never re-issued.
    new events.Rule(this, 'MonthlyReportSchedule', {
      ruleName: `meter-${settings.name}-monthly-report`,
      description: "Issues last month's invoices on the 2nd, after the nightly reconcile",
      schedule: events.Schedule.cron({ minute: '0', hour: String(Math.min(settings.reconcileHourUtc + 3, 23)), day: '2' }),
      targets: [new targets.LambdaFunction(report.function, {
        deadLetterQueue: report.failures, retryAttempts: 3, maxEventAge: Duration.hours(6),
      })],
    });

    this.functions = {
      authorizer, cacheInvalidator: invalidator, archiveTransformer: transformer, reconcileJob: reconcile, monthlyReport: report,
      reportLinks: links,
    };
    if (backend) this.functions.exampleBackend = backend;
    this.monitoring = new Monitoring(this, 'Monitoring', {
      settings,
      functions: this.functions,
      tables: [data.apiKeys, data.usageCounters],
      pipeline: this.pipeline,
      usageLogGroupName: usageLogGroup.logGroupName,
      archiveBucketName: data.archive.bucketName,
      alerts: data.alertsTopic,
      stateMachines: [graceEnd],
      api: this.exampleApi ? { name: `meter-${settings.name}-example`, stage: EXAMPLE_STAGE } : undefined,
    });

    // --- what an operator running `meter` against this deployment may do -------------------------------
    // `meter keys …`, `meter usage show` and `meter report --resend-links`: attach this policy to the
    // operators' role or group. `keys import --from-dynamodb` also needs Scan on the source table.
    const operator = new iam.ManagedPolicy(this, 'OperatorPolicy', {
      managedPolicyName: `meter-${settings.name}-operator`,
      description: `meter-${settings.name}: what the meter command line needs for keys, usage and resending report links`,
      statements: [
        new iam.PolicyStatement({
          sid: 'Keys',
          actions: ['dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:Scan', 'dynamodb:ConditionCheckItem'],
          resources: keys,
        }),
        new iam.PolicyStatement({ sid: 'KeysByHash', actions: ['dynamodb:Query'], resources: keysIndex }),
        new iam.PolicyStatement({
          sid: 'Counters',
          actions: ['dynamodb:GetItem', 'dynamodb:Query', 'dynamodb:UpdateItem', 'dynamodb:ConditionCheckItem'],
          resources: counters,
        }),
        new iam.PolicyStatement({ sid: 'Notices', actions: ['sns:Publish'], resources: [data.revocationTopic.topicArn, data.financeTopic.topicArn] }),
        new iam.PolicyStatement({ sid: 'NoticesKey', actions: ['kms:GenerateDataKey*', 'kms:Decrypt'], resources: [data.topicKey.keyArn] }),
        new iam.PolicyStatement({ sid: 'GraceEnd', actions: ['states:StartExecution'], resources: [graceEnd.stateMachineArn] }),
        new iam.PolicyStatement({ sid: 'Reports', actions: ['s3:ListBucket'], resources: [data.reports.bucketArn] }),
        new iam.PolicyStatement({ sid: 'ReportFiles', actions: ['s3:GetObject'], resources: [data.reports.arnForObjects(`${REPORTS_PREFIX}/*`)] }),
        new iam.PolicyStatement({ sid: 'ReportLinks', actions: ['kms:GenerateMac'], resources: [linksKey.keyArn] }),
      ],
    });
    acknowledge(operator,
      { id: 'AwsSolutions-IAM5[Action::kms:GenerateDataKey*]', reason: "SNS encrypts each notice with a fresh data key of the topics' key: a family of actions on that one key" },
      { id: `AwsSolutions-IAM5[Resource::${arnToken(data.reports)}/${REPORTS_PREFIX}/*]`, reason: 'Report files are named by month and customer under this prefix; links are signed for any of them' },
    );

    // --- what scripts/deploy prints and scripts/verify-deployment checks ---------------------------------
    const output = (id: string, value: string, description: string) =>
      new CfnOutput(this, id, { value, description });
    output('Environment', settings.name, 'The environment');
    output('MeterStore', store, 'METER_STORE for the meter command line');
    output('MeterArchive', archive, 'METER_ARCHIVE for the meter command line');
    output('MeterReports', `s3://${data.reports.bucketName}/${REPORTS_PREFIX}`, 'METER_REPORTS');
    output('RevocationTopicArn', data.revocationTopic.topicArn, 'METER_REVOCATION_TOPIC for meter keys revoke');
    output('GraceEndStateMachine', graceEnd.stateMachineArn, 'METER_GRACE_END_STATE_MACHINE for meter keys rotate');
    output('FinanceTopicArn', data.financeTopic.topicArn, 'Finance subscribes here');
    output('AlertsTopicArn', data.alertsTopic.topicArn, 'Operators subscribe here');
    output('UsageAlertsTopicArn', data.usageAlertsTopic.topicArn, "Customers' usage thresholds (meter.usage.threshold events): route them to e-mail, chat or webhooks");
    output('OperatorPolicyArn', operator.managedPolicyArn, "Attach to the operators' role or group to run meter keys, usage and report --resend-links");
    output('LinksUrl', linksUrl.url, 'METER_LINKS_URL for meter report --resend-links: the report-links function URL');
    output('LinksKeyArn', linksKey.keyArn, 'METER_LINKS_KEY for meter report --resend-links: the HMAC key that signs links');
    output('ApiKeysTable', data.apiKeys.tableName, 'Keys');
    output('UsageCountersTable', data.usageCounters.tableName, 'Counters');
    output('ArchiveBucket', data.archive.bucketName, 'The usage archive (source of truth)');
    output('ReportsBucket', data.reports.bucketName, 'Invoices');
    output('AthenaResultsBucket', data.athenaResults.bucketName, 'Athena query results');
    output('AccessLogsBucket', data.accessLogs.bucketName, 'S3 server access logs of the other buckets');
    output('PricingObject', `s3://${data.reports.bucketName}/${PRICING_KEY}`, 'The pricing the monthly report uses');
    output('UsageLogGroup', usageLogGroup.logGroupName, 'The log group the subscription reads usage lines from');
    output('DeliveryStream', this.pipeline.names.deliveryStream, 'Firehose: usage logs to the archive');
    output('GlueTable', `${this.pipeline.names.database}.${this.pipeline.names.table}`, 'The archive as a table (Athena)');
    output('AthenaWorkgroup', this.pipeline.names.workgroup, 'Athena workgroup');
    output('Dashboard', `https://${this.region}.console.aws.amazon.com/cloudwatch/home?region=${this.region}#dashboards:name=meter-api-usage-${settings.name}`, 'CloudWatch dashboard');
    output('Functions', Object.values(this.functions).map((f) => f.function.functionName).join(','), 'The Lambda functions');
    output('FailureQueues', Object.values(this.functions).flatMap((f) => (f.failures ? [f.failures.queueName] : [])).join(','), 'Events the asynchronous functions gave up on');
    output('Schedules', `meter-${settings.name}-nightly-reconcile,meter-${settings.name}-parked-refresh,meter-${settings.name}-monthly-report`, 'EventBridge rules');
    output('Alarms', this.monitoring.alarmNames.join(','), 'CloudWatch alarms');
    output('FlushTargets', flushTargets.map((target) => target.spec).join(','), 'Stages whose authorizer cache a revocation flushes');
    if (this.exampleApi) {
      output('ApiUrl', this.exampleApi.api.url, `The example API (header ${KEY_HEADER})`);
      output('ExampleApiId', this.exampleApi.api.restApiId, 'The example REST API');
    }
    if (existing) output('ExistingApiAuthorizerId', existing.authorizerId, 'Attach this authorizer to your methods or routes');
  }
}
