/**
 * The archive path (CONTRACTS.md §5, §8): one CloudWatch Logs subscription on the API's log group feeds
 * Firehose; the archive transformer (which also keeps the realtime counters) turns each buffer into
 * archive rows partitioned by day; Firehose converts them to Parquet through the Glue table that Athena
 * and the notebooks query, with partition projection so that no crawler is needed.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Duration, Size, Stack } from 'aws-cdk-lib';
import * as athena from 'aws-cdk-lib/aws-athena';
import * as firehose from 'aws-cdk-lib/aws-kinesisfirehose';
import * as glue from 'aws-cdk-lib/aws-glue';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as logsDestinations from 'aws-cdk-lib/aws-logs-destinations';
import { Construct } from 'constructs';
import { ARCHIVE_PREFIX, FIREHOSE_ERRORS_PREFIX, type MeterData } from './data';
import { acknowledge, arnToken } from './nag';
import type { EnvironmentSettings } from './settings';

/**
 * Matches every line that holds the usage line's type, whether it stands alone, is wrapped by Lambda's
 * text format or is Lambda's JSON log format: a quoted term matches that exact text anywhere in the
 * event. The transformer decides what is a usage line; the filter only keeps other logs out.
 */
export const USAGE_FILTER_PATTERN = '"API_USAGE"';

/** Firehose's processor buffer as deployed (realtime/src/buffer.rs `Buffering::DEPLOYED`). */
export const PROCESSOR_BUFFER = { size: Size.mebibytes(3), interval: Duration.seconds(45) };
/** Firehose's destination buffer: its maxima, so the archive gets few, large Parquet files. */
export const DESTINATION_BUFFER = { size: Size.mebibytes(128), interval: Duration.seconds(900) };

/** The names the pipeline's resources get, known before they exist (dashboards and outputs use them). */
export function pipelineNames(environment: string) {
  return {
    database: `meter_${environment.replace(/-/g, '_')}`,
    table: 'usage',
    deliveryStream: `meter-${environment}-usage`,
    subscriptionFilter: `meter-${environment}-usage`,
    workgroup: `meter-${environment}`,
  };
}

/** The analysts' SQL (Athena dialect), parity-tested against meter by notebooks/test_notebooks.py. */
export const SQL_DIR = path.join(__dirname, '..', '..', 'notebooks', 'sql');

/** Each query of notebooks/sql/ as a named query: `meter <file name>`, described by its first line. */
export function namedQueries(): { name: string; description: string; sql: string }[] {
  return fs
    .readdirSync(SQL_DIR)
    .filter((file) => file.endsWith('.sql'))
    .sort()
    .map((file) => {
      const sql = fs.readFileSync(path.join(SQL_DIR, file), 'utf8');
      const description = sql.split('\n')[0].replace(/^--\s*/, '').slice(0, 1024);
      return { name: `meter ${path.basename(file, '.sql').replace(/_/g, ' ')}`, description, sql };
    });
}

/** A Glue table's storage: Parquet files under `location` with these columns, in this order. */
function parquetFiles(location: string, columns: Record<string, string>): glue.CfnTable.StorageDescriptorProperty {
  return {
    location,
    inputFormat: 'org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat',
    outputFormat: 'org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat',
    serdeInfo: { serializationLibrary: 'org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe' },
    columns: Object.entries(columns).map(([name, type]) => ({ name, type })),
  };
}

export interface PipelineProps {
  readonly settings: EnvironmentSettings;
  readonly data: MeterData;
  readonly transformer: lambda.IFunction;
  readonly usageLogGroup: logs.ILogGroup;
}

export class ArchivePipeline extends Construct {
  readonly database: glue.CfnDatabase;
  readonly table: glue.CfnTable;
  readonly deliveryStream: firehose.DeliveryStream;
  readonly subscription: logs.SubscriptionFilter;
  readonly workgroup: athena.CfnWorkGroup;
  readonly keysTable: glue.CfnTable;
  readonly namedQueries: athena.CfnNamedQuery[];
  readonly names: ReturnType<typeof pipelineNames>;

  constructor(scope: Construct, id: string, props: PipelineProps) {
    super(scope, id);
    const { settings, data } = props;
    const account = Stack.of(this).account;
    const location = `s3://${data.archive.bucketName}/${ARCHIVE_PREFIX}/`;
    const names = (this.names = pipelineNames(settings.name));

    this.database = new glue.CfnDatabase(this, 'Database', {
      catalogId: account,
      databaseInput: { name: names.database, description: 'meter usage archive' },
    });
    this.table = new glue.CfnTable(this, 'UsageTable', {
      catalogId: account,
      databaseName: names.database,
      tableInput: {
        name: names.table,
        description: 'One row per usage event (CONTRACTS.md §5); a request may appear more than once',
        tableType: 'EXTERNAL_TABLE',
        parameters: {
          classification: 'parquet',
          'projection.enabled': 'true',
          'projection.year.type': 'integer',
          'projection.year.range': '2024,2099',
          'projection.month.type': 'integer',
          'projection.month.range': '1,12',
          'projection.month.digits': '2',
          'projection.day.type': 'integer',
          'projection.day.range': '1,31',
          'projection.day.digits': '2',
          'storage.location.template': `${location}year=\${year}/month=\${month}/day=\${day}/`,
        },
        partitionKeys: [
          { name: 'year', type: 'int' },
          { name: 'month', type: 'int' },
          { name: 'day', type: 'int' },
        ],
        storageDescriptor: parquetFiles(location, {
          request_id: 'string', key_id: 'string', ts: 'timestamp', status_code: 'int', should_count: 'boolean',
          method: 'string', resource: 'string', latency_ms: 'int',
        }),
      },
    });

    const firehoseLogs = new logs.LogGroup(this, 'FirehoseLogs', {
      logGroupName: `/aws/kinesisfirehose/meter-${settings.name}-usage`,
      retention: settings.logRetentionDays as logs.RetentionDays,
    });
    this.deliveryStream = new firehose.DeliveryStream(this, 'Usage', {
      deliveryStreamName: names.deliveryStream,
      encryption: firehose.StreamEncryption.awsOwnedKey(),
      destination: new firehose.S3Bucket(data.archive, {
        dataOutputPrefix:
          `${ARCHIVE_PREFIX}/year=!{partitionKeyFromLambda:year}/month=!{partitionKeyFromLambda:month}` +
          '/day=!{partitionKeyFromLambda:day}/',
        errorOutputPrefix:
          `${FIREHOSE_ERRORS_PREFIX}/!{firehose:error-output-type}/year=!{timestamp:yyyy}` +
          '/month=!{timestamp:MM}/day=!{timestamp:dd}/',
        bufferingSize: DESTINATION_BUFFER.size,
        bufferingInterval: DESTINATION_BUFFER.interval,
        loggingConfig: new firehose.EnableLogging(firehoseLogs),
        processors: [
          new firehose.LambdaFunctionProcessor(props.transformer, {
            bufferSize: PROCESSOR_BUFFER.size,
            bufferInterval: PROCESSOR_BUFFER.interval,
            retries: 3,
          }),
        ],
        dynamicPartitioning: { enabled: true, retryDuration: Duration.hours(2) },
        dataFormatConversion: {
          schemaConfiguration: firehose.SchemaConfiguration.fromCfnTable(this.table),
          // `ts` is epoch milliseconds (archive/src/format.rs `JsonRow`): the Hive JSON SerDe reads it as such.
          inputFormat: new firehose.HiveJsonInputFormat({
            timestampParsers: [firehose.TimestampParser.EPOCH_MILLIS],
          }),
          outputFormat: new firehose.ParquetOutputFormat({ compression: firehose.ParquetCompression.SNAPPY }),
        },
      }),
    });

    // The L2 grants its delivery role what Firehose's S3 destination needs on the archive bucket alone.
    const deliveryRole = this.deliveryStream.node.findChild('S3 Destination Role');
    const firehoseReason = "Firehose's S3 destination writes, lists and cleans up multipart uploads on the archive bucket only";
    acknowledge(
      deliveryRole,
      ...['s3:Abort*', 's3:DeleteObject*', 's3:GetBucket*', 's3:GetObject*', 's3:List*'].map((action) => ({
        id: `AwsSolutions-IAM5[Action::${action}]`,
        reason: firehoseReason,
      })),
      { id: `AwsSolutions-IAM5[Resource::${arnToken(data.archive)}/*]`, reason: firehoseReason },
      {
        id: 'AwsSolutions-IAM5[Resource::*]',
        reason: 'glue:GetSchemaVersion (Glue schema registry) has no resource scope; the table itself is scoped',
      },
      {
        id: `AwsSolutions-IAM5[Resource::${arnToken(props.transformer)}:*]`,
        reason: 'Firehose may invoke any version of the transformer it is configured with',
      },
    );

    // CloudWatch Logs sends a test record when the filter is created and fails the create ("Could not
    // deliver test message") while the role's permission has not propagated through IAM. The L2's role
    // gets its permission from a separate policy created right before the filter; this one holds it
    // inline and names the stream by its known ARN, so CloudFormation creates it at the start of the
    // deploy, minutes before the stream is active and the filter is made.
    const logsRole = new iam.Role(this, 'LogsToFirehoseRole', {
      description: 'CloudWatch Logs delivers the usage subscription to Firehose',
      assumedBy: new iam.ServicePrincipal('logs.amazonaws.com', {
        conditions: { StringLike: { 'aws:SourceArn': Stack.of(this).formatArn({ service: 'logs', resource: '*' }) } },
      }),
      inlinePolicies: {
        deliver: new iam.PolicyDocument({
          statements: [
            new iam.PolicyStatement({
              actions: ['firehose:PutRecord', 'firehose:PutRecordBatch'],
              resources: [
                Stack.of(this).formatArn({ service: 'firehose', resource: 'deliverystream', resourceName: names.deliveryStream }),
              ],
            }),
          ],
        }),
      },
    });
    this.subscription = new logs.SubscriptionFilter(this, 'Subscription', {
      logGroup: props.usageLogGroup,
      filterName: names.subscriptionFilter,
      filterPattern: logs.FilterPattern.literal(USAGE_FILTER_PATTERN),
      // Immutable: the L2 would otherwise add the late, separate policy this role avoids.
      destination: new logsDestinations.FirehoseDestination(this.deliveryStream, { role: logsRole.withoutPolicyUpdates() }),
    });
    this.subscription.node.addDependency(logsRole);

    this.workgroup = new athena.CfnWorkGroup(this, 'Workgroup', {
      name: names.workgroup,
      description: 'Analysts and the scale-out rollup query the usage archive here',
      state: 'ENABLED',
      recursiveDeleteOption: true,
      workGroupConfiguration: {
        enforceWorkGroupConfiguration: true,
        publishCloudWatchMetricsEnabled: true,
        bytesScannedCutoffPerQuery: settings.athenaBytesScannedCutoffGb * 1_000_000_000,
        resultConfiguration: {
          outputLocation: `s3://${data.athenaResults.bucketName}/results/`,
          encryptionConfiguration: { encryptionOption: 'SSE_S3' },
        },
      },
    });

    // The key directory snapshot each reconcile run writes beside the archive (keys/keys.parquet,
    // archive/src/output.rs `key_directory_schema`): which customer and plan a key bills to.
    this.keysTable = new glue.CfnTable(this, 'KeysTable', {
      catalogId: account,
      databaseName: names.database,
      tableInput: {
        name: 'keys',
        description: 'One row per API key: its customer and plan (no key hashes), rewritten by each reconcile run',
        tableType: 'EXTERNAL_TABLE',
        parameters: { classification: 'parquet' },
        storageDescriptor: parquetFiles(`${location}keys/`, {
          key_id: 'string', customer_email: 'string', plan: 'string', name: 'string', status: 'string',
          created_at: 'timestamp', revoked_at: 'timestamp',
        }),
      },
    });
    this.keysTable.addResourceDependency(this.database);
    // The tables name their database by string: without the dependency CloudFormation may create a
    // table first and fail (aws-cdk#26262).
    this.table.addResourceDependency(this.database);

    // The analysts' queries and the scale-out rollup, in the workgroup, over these tables.
    this.namedQueries = namedQueries().map(({ name, description, sql }) => {
      const query = new athena.CfnNamedQuery(this, `Query ${name}`, {
        name,
        description,
        database: names.database,
        workGroup: names.workgroup,
        queryString: sql,
      });
      query.addResourceDependency(this.workgroup);
      query.addResourceDependency(this.database);
      return query;
    });
  }
}
