/**
 * The dashboard `meter-api-usage-<env>` and the alarms. The functions' own figures come from the EMF
 * lines they print (namespace `Meter`, dimension `Function`); the rest are the services' metrics.
 */
import { Duration } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import type * as sns from 'aws-cdk-lib/aws-sns';
import type * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import type { MeterFunction } from './functions';
import { FIREHOSE_ERRORS_METRICS } from './data';
import { type ArchivePipeline, DESTINATION_BUFFER } from './pipeline';
import type { EnvironmentSettings } from './settings';

/** The namespace of the functions' EMF metrics (realtime/src/metrics.rs). */
export const METRICS_NAMESPACE = 'Meter';
/** Realtime usage is visible within this bound (the design's promise); the lag alarm fires above it. */
export const REALTIME_LAG_BOUND = Duration.seconds(60);
/** A table's throttled reads and writes (these two metrics carry the table name alone). */
function throttles(table: dynamodb.Table): cloudwatch.MathExpression {
  const metric = (name: string) => table.metric(name, { statistic: 'Sum', period: Duration.minutes(5) });
  return new cloudwatch.MathExpression({
    expression: 'FILL(r, 0) + FILL(w, 0)',
    usingMetrics: { r: metric('ReadThrottleEvents'), w: metric('WriteThrottleEvents') },
    label: `${table.node.id} throttled`,
    period: Duration.minutes(5),
  });
}

/**
 * Per function, the metric of its errors that are answers, not failures: the authorizer fails with
 * `Unauthorized` to make API Gateway answer 401 (no key, a malformed key: scanner traffic), and
 * Lambda counts each as an error. `UNAUTHORIZED_ANSWERS` in authorizer/src/lambda.rs (the infra
 * tests hold the two equal).
 */
export const EXPECTED_ERRORS: Record<string, { function: string; metric: string }> = {
  authorizer: { function: 'authorizer', metric: 'UnauthorizedAnswers' },
};

/** Firehose's freshness with dynamic partitioning may reach 1.5 times its buffer (AWS: "Buffer data
 * for dynamic partitioning"); five minutes on top. */
export const ARCHIVE_STALE_SECONDS = DESTINATION_BUFFER.interval.toSeconds() * 1.5 + 300;

export interface MonitoringProps {
  readonly settings: EnvironmentSettings;
  readonly functions: Record<string, MeterFunction>;
  readonly tables: dynamodb.Table[];
  readonly pipeline: ArchivePipeline;
  readonly usageLogGroupName: string;
  /** The archive bucket, whose request metrics watch the Firehose error output. */
  readonly archiveBucketName: string;
  readonly alerts: sns.ITopic;
  /** State machines whose failed executions page (the grace-end cache flush). */
  readonly stateMachines: sfn.StateMachine[];
  readonly api?: { name: string; stage: string };
}

export class Monitoring extends Construct {
  readonly dashboard: cloudwatch.Dashboard;
  readonly alarms: cloudwatch.Alarm[] = [];
  /** The alarms' names (literal, so outputs do not refer to the alarms themselves). */
  readonly alarmNames: string[] = [];

  constructor(scope: Construct, id: string, props: MonitoringProps) {
    super(scope, id);
    const { settings } = props;
    const meter = (fn: string, name: string, statistic = 'Sum', period = Duration.minutes(5)) =>
      new cloudwatch.Metric({
        namespace: METRICS_NAMESPACE,
        metricName: name,
        dimensionsMap: { Function: fn },
        statistic,
        period,
        label: name,
      });
    const transformer = (name: string, statistic = 'Sum') => meter('archive-transformer', name, statistic);
    const reconcile = (name: string) => meter('reconcile-job', name, 'Maximum', Duration.days(1));
    const streamName = props.pipeline.names.deliveryStream;
    const firehoseMetric = (name: string, statistic: string) =>
      new cloudwatch.Metric({
        namespace: 'AWS/Firehose',
        metricName: name,
        dimensionsMap: { DeliveryStreamName: streamName },
        statistic,
        period: Duration.minutes(5),
        label: name,
      });
    // A Metrics Insights query rather than one metric: CloudWatch Logs also sets a DestinationType
    // dimension, whose value for Firehose it does not document; the query sums over it.
    const subscriptionMetric = (name: string) =>
      new cloudwatch.MathExpression({
        expression:
          `SELECT SUM(${name}) FROM SCHEMA("AWS/Logs", DestinationType, FilterName, LogGroupName) ` +
          `WHERE FilterName = '${props.pipeline.names.subscriptionFilter}' AND LogGroupName = '${props.usageLogGroupName}'`,
        usingMetrics: {},
        period: Duration.minutes(5),
        label: name,
      });

    const alarm = (
      id: string,
      description: string,
      metric: cloudwatch.IMetric,
      threshold: number,
      options: Partial<cloudwatch.CreateAlarmOptions> = {},
    ) => {
      const alarmName = `meter-${settings.name}-${id.replace(/([a-z])([A-Z])/g, '$1-$2').toLowerCase()}`;
      this.alarmNames.push(alarmName);
      const created = new cloudwatch.Alarm(this, id, {
        metric,
        alarmName,
        alarmDescription: description,
        threshold,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        ...options,
      });
      created.addAlarmAction(new actions.SnsAction(props.alerts));
      this.alarms.push(created);
      return created;
    };

    for (const [name, fn] of Object.entries(props.functions)) {
      const errors = fn.function.metricErrors({ period: Duration.minutes(5), statistic: 'Sum' });
      const answers = EXPECTED_ERRORS[name];
      // Errors that are answers (the authorizer's 401s to scanners) would page on normal traffic.
      const failures = answers
        ? new cloudwatch.MathExpression({
          expression: 'errors - FILL(answers, 0)',
          usingMetrics: { errors, answers: meter(answers.function, answers.metric) },
          period: Duration.minutes(5),
          label: `${name} failures`,
        })
        : errors;
      alarm(`${name}Errors`, `${fn.function.functionName} failed invocations${answers ? ` (not counting ${answers.metric})` : ''}: read its log group`,
        failures, 0);
      if (fn.failures) {
        alarm(`${name}FailedEvents`,
          `${fn.function.functionName} gave up on events (kept in ${fn.failures.queueName}): fix the cause, then redrive`,
          fn.failures.metricApproximateNumberOfMessagesVisible({ period: Duration.minutes(5), statistic: 'Maximum' }), 0);
      }
    }
    for (const machine of props.stateMachines) {
      alarm(`${machine.node.id}ExecutionsFailed`,
        `${machine.node.id} executions failed: a rotated key's API Gateway cache flush did not happen (the gateway may serve its cached Allow until the cache expires); read the state machine's log group`,
        machine.metricFailed({ period: Duration.minutes(5), statistic: 'Sum' }), 0);
    }
    const lag = transformer('RealtimeLagMs', 'Average');
    alarm('RealtimeLag', `usage reaches the counters more than ${REALTIME_LAG_BOUND.toSeconds()} s after the request`,
      lag, REALTIME_LAG_BOUND.toMilliseconds(), { evaluationPeriods: 3, datapointsToAlarm: 3 });
    alarm('CounterEventsNotApplied',
      'usage events reached the archive but not the realtime counters (DynamoDB throttled or down); reconcile heals them',
      transformer('CounterEventsNotApplied'), 0, { evaluationPeriods: 3, datapointsToAlarm: 2 });
    alarm('UndecodableRecords', "Firehose records the transformer could not decode went to the error output, not the archive",
      transformer('RecordsFailed'), 0);
    alarm('Drift', `a reconcile run corrected more than ${settings.driftAlarmThreshold} requests of drift`,
      reconcile('TotalAbsDrift'), settings.driftAlarmThreshold);
    // No data is the symptom (a stopped pipeline invokes nothing), so it breaches; an environment that
    // may sit idle turns the alarm off (noUsageAlarmHours: 0) rather than page for quiet.
    if (settings.noUsageAlarmHours > 0) {
      alarm('NoUsage', `no usage event for ${settings.noUsageAlarmHours} h: is the API or the subscription down?`,
        meter('archive-transformer', 'UsageEvents', 'Sum', Duration.hours(1)), 1, {
          comparisonOperator: cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
          evaluationPeriods: settings.noUsageAlarmHours,
          treatMissingData: cloudwatch.TreatMissingData.BREACHING,
        });
    }
    alarm('FirehoseDeliveryFailed', 'Firehose could not write to the archive bucket',
      firehoseMetric('DeliveryToS3.Success', 'Minimum'), 1, {
        comparisonOperator: cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
      });
    alarm('FirehoseProcessingFailed', 'Firehose could not invoke the archive transformer',
      firehoseMetric('ExecuteProcessing.Success', 'Minimum'), 1, {
        comparisonOperator: cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
      });
    // The two ways usage misses the archive inside Firehose: rows its Parquet conversion refuses, and
    // records whose processing failed. Both land under the error prefix, which its request metrics watch.
    alarm('FirehoseConversionFailed',
      "Firehose's Parquet conversion refused rows (firehose-errors/format-conversion-failed/): they are in neither the archive nor an invoice; its log group says why",
      firehoseMetric('FailedConversion.Records', 'Sum'), 0);
    alarm('FirehoseErrorObjects',
      'Firehose wrote records to firehose-errors/ instead of the archive: replay processing-failed/ with meter replay-failed once the cause is fixed (deploy.md, Troubleshooting)',
      new cloudwatch.Metric({
        namespace: 'AWS/S3',
        metricName: 'PutRequests',
        dimensionsMap: { BucketName: props.archiveBucketName, FilterId: FIREHOSE_ERRORS_METRICS },
        statistic: 'Sum',
        period: Duration.minutes(5),
        label: 'error output PUTs',
      }), 0);
    alarm('ArchiveStale',
      `the newest archived record is more than ${ARCHIVE_STALE_SECONDS / 60} minutes old (Firehose may take 1.5 times its ${DESTINATION_BUFFER.interval.toMinutes()}-minute buffer with dynamic partitioning)`,
      firehoseMetric('DeliveryToS3.DataFreshness', 'Maximum'), ARCHIVE_STALE_SECONDS);
    // On a non-retryable error CloudWatch Logs disables the subscription for up to 10 minutes and skips
    // the logs meanwhile: those events reach neither the counters nor the archive.
    alarm('SubscriptionDeliveryErrors',
      'CloudWatch Logs could not deliver usage logs to Firehose and may be skipping them: check the filter and role',
      subscriptionMetric('DeliveryErrors'), 0);
    alarm('SubscriptionThrottled', 'CloudWatch Logs is throttled delivering to Firehose (retried for 24 h)',
      subscriptionMetric('DeliveryThrottling'), 0, { evaluationPeriods: 3, datapointsToAlarm: 3 });
    for (const table of props.tables) {
      alarm(`${table.node.id}Throttled`, `DynamoDB throttles requests to ${table.node.id}`, throttles(table), 0,
        { evaluationPeriods: 3, datapointsToAlarm: 2 });
    }

    const graph = (title: string, left: cloudwatch.IMetric[], width = 8) =>
      new cloudwatch.GraphWidget({ title, left, width, height: 6 });
    this.dashboard = new cloudwatch.Dashboard(this, 'Dashboard', {
      dashboardName: `meter-api-usage-${settings.name}`,
      defaultInterval: Duration.hours(24),
    });
    this.dashboard.addWidgets(
      new cloudwatch.TextWidget({
        markdown: `# meter ${settings.name}\nUsage, realtime health and reconcile. Troubleshooting: the manual, docs/src/deploy.md.`,
        width: 24,
        height: 2,
      }),
    );
    this.dashboard.addWidgets(
      graph('Usage events', [transformer('UsageEvents'), transformer('DeliveriesCounted'), transformer('DuplicateDeliveries')]),
      graph('Rejects by reason', [
        transformer('RejectedLines'), transformer('UnknownKeyEvents'), transformer('DroppedMethod'),
        transformer('DroppedResource'), transformer('DroppedLatencyMs'), transformer('RecordsFailed'),
      ]),
      graph('Realtime lag (ms)', [lag, transformer('RealtimeLagMs', 'Maximum')]),
    );
    this.dashboard.addWidgets(
      graph('Counters', [transformer('CounterEventsNotApplied'), transformer('CounterWriteUnits'), transformer('CounterReadUnits')]),
      graph('Quotas', [transformer('QuotaRefusals'), transformer('UsageAlertsClaimed')]),
      graph('DynamoDB throttles', props.tables.flatMap((table) => [
        table.metric('ReadThrottleEvents', { statistic: 'Sum', period: Duration.minutes(5), label: `${table.node.id} reads` }),
        table.metric('WriteThrottleEvents', { statistic: 'Sum', period: Duration.minutes(5), label: `${table.node.id} writes` }),
      ])),
      graph('Drift per reconcile run', [
        reconcile('TotalAbsDrift'), reconcile('ItemsCorrected'), reconcile('MissingInRealtime'),
        reconcile('ExtraInRealtime'), reconcile('OrphanEvents'),
      ]),
    );
    this.dashboard.addWidgets(
      graph('Firehose delivery freshness (s)', [firehoseMetric('DeliveryToS3.DataFreshness', 'Maximum')]),
      graph('Firehose', [
        firehoseMetric('IncomingRecords', 'Sum'), firehoseMetric('ExecuteProcessing.Success', 'Average'),
        firehoseMetric('DeliveryToS3.Success', 'Average'), transformer('RecordsArchivedDirectly'),
      ]),
      graph('Log subscription', [
        subscriptionMetric('ForwardedLogEvents'), subscriptionMetric('DeliveryErrors'), subscriptionMetric('DeliveryThrottling'),
      ]),
    );
    this.dashboard.addWidgets(
      graph('Lambda errors', Object.values(props.functions).map((fn) =>
        fn.function.metricErrors({ period: Duration.minutes(5), label: fn.function.node.scope?.node.id }))),
      graph('Lambda duration p99 (ms)', Object.values(props.functions).map((fn) =>
        fn.function.metricDuration({ period: Duration.minutes(5), statistic: 'p99', label: fn.function.node.scope?.node.id }))),
      ...(props.api
        ? [graph('Example API', ['Count', '4XXError', '5XXError'].map((name) =>
            new cloudwatch.Metric({
              namespace: 'AWS/ApiGateway', metricName: name, statistic: 'Sum', period: Duration.minutes(5),
              dimensionsMap: { ApiName: props.api!.name, Stage: props.api!.stage },
            })))]
        : []),
    );
  }
}
