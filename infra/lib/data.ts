/**
 * What holds the system's data and messages: the two tables, the buckets, the topics. Data is retained
 * when the stack is deleted (scripts/destroy removes it only when told).
 */
import { ArnFormat, Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import { Construct } from 'constructs';
import type { EnvironmentSettings } from './settings';

/** The GSI the authorizer reads keys by (CONTRACTS.md §2). */
export const HASHED_KEY_INDEX = 'hashedKey-index';
/** The archive's prefix in its bucket (`METER_ARCHIVE=s3://<bucket>/usage`). */
export const ARCHIVE_PREFIX = 'usage';
/** Firehose's error output, beside the archive but outside its prefix. */
export const FIREHOSE_ERRORS_PREFIX = 'firehose-errors';
/** The archive bucket's request metrics filter on the Firehose error output: a PUT there is usage that
 * reached neither the archive nor an invoice, and it alarms. */
export const FIREHOSE_ERRORS_METRICS = 'firehose-errors';

export class MeterData extends Construct {
  readonly apiKeys: dynamodb.Table;
  readonly usageCounters: dynamodb.Table;
  readonly archive: s3.Bucket;
  readonly reports: s3.Bucket;
  readonly athenaResults: s3.Bucket;
  readonly accessLogs: s3.Bucket;
  readonly topicKey: kms.Key;
  readonly revocationTopic: sns.Topic;
  readonly financeTopic: sns.Topic;
  readonly alertsTopic: sns.Topic;
  readonly usageAlertsTopic: sns.Topic;

  constructor(scope: Construct, id: string, settings: EnvironmentSettings) {
    super(scope, id);
    const table = (name: string, props: Partial<dynamodb.TableProps>) =>
      new dynamodb.Table(this, name, {
        tableName: `${name}-${settings.name}`,
        billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
        encryption: dynamodb.TableEncryption.AWS_MANAGED,
        pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
        deletionProtection: settings.protectData,
        removalPolicy: RemovalPolicy.RETAIN,
        partitionKey: { name: 'id', type: dynamodb.AttributeType.STRING },
        ...props,
      });
    this.apiKeys = table('ApiKeys', {});
    // Keys only: the authorizer re-reads the item by id with a consistent read, so a revocation is never
    // hidden by index lag.
    this.apiKeys.addGlobalSecondaryIndex({
      indexName: HASHED_KEY_INDEX,
      partitionKey: { name: 'hashedKey', type: dynamodb.AttributeType.STRING },
      projectionType: dynamodb.ProjectionType.KEYS_ONLY,
    });
    this.usageCounters = table('UsageCounters', {
      partitionKey: { name: 'keyId', type: dynamodb.AttributeType.STRING },
      sortKey: { name: 'day', type: dynamodb.AttributeType.STRING },
      // Delivery markers, parked usage and run records expire; day items carry no TTL.
      timeToLiveAttribute: 'expiresAt',
    });

    this.accessLogs = new s3.Bucket(this, 'AccessLogs', {
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      encryption: s3.BucketEncryption.S3_MANAGED,
      enforceSSL: true,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      removalPolicy: RemovalPolicy.RETAIN,
      lifecycleRules: [{ expiration: Duration.days(365) }],
    });
    const bucket = (name: string, props: Partial<s3.BucketProps>) =>
      new s3.Bucket(this, name, {
        blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
        encryption: s3.BucketEncryption.S3_MANAGED,
        enforceSSL: true,
        objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
        removalPolicy: RemovalPolicy.RETAIN,
        serverAccessLogsBucket: this.accessLogs,
        serverAccessLogsPrefix: `${name.toLowerCase()}/`,
        ...props,
      });
    this.archive = bucket('Archive', {
      // The source of truth: an overwritten or deleted file stays recoverable for 30 days.
      versioned: true,
      metrics: [{ id: FIREHOSE_ERRORS_METRICS, prefix: `${FIREHOSE_ERRORS_PREFIX}/` }],
      lifecycleRules: [
        {
          id: 'archive-to-cheaper-classes',
          prefix: `${ARCHIVE_PREFIX}/`,
          transitions: [
            { storageClass: s3.StorageClass.INFREQUENT_ACCESS, transitionAfter: Duration.days(settings.archiveInfrequentAccessDays) },
            { storageClass: s3.StorageClass.GLACIER_INSTANT_RETRIEVAL, transitionAfter: Duration.days(settings.archiveGlacierDays) },
          ],
        },
        { id: 'old-versions', noncurrentVersionExpiration: Duration.days(30) },
        { id: 'unfinished-uploads', abortIncompleteMultipartUploadAfter: Duration.days(7) },
      ],
    });
    // Issued invoices are written once (the report writes them only if absent); versioning keeps any
    // later overwrite from destroying what finance received.
    this.reports = bucket('Reports', { versioned: true });
    this.athenaResults = bucket('AthenaResults', {
      lifecycleRules: [{ id: 'query-results', expiration: Duration.days(30) }],
    });

    // A customer-managed key: CloudWatch alarms and EventBridge can publish only to topics whose key
    // policy lets them, which the AWS-managed SNS key does not.
    this.topicKey = new kms.Key(this, 'TopicKey', {
      description: `meter-${settings.name}: encrypts the revocation, finance and alerts topics`,
      enableKeyRotation: true,
      removalPolicy: RemovalPolicy.RETAIN,
    });
    this.topicKey.addToResourcePolicy(
      new iam.PolicyStatement({
        actions: ['kms:Decrypt', 'kms:GenerateDataKey*'],
        principals: [new iam.ServicePrincipal('cloudwatch.amazonaws.com')],
        resources: ['*'],
      }),
    );
    const topic = (name: string, displayName: string) =>
      new sns.Topic(this, name, {
        topicName: `meter-${settings.name}-${name.toLowerCase()}`,
        displayName,
        masterKey: this.topicKey,
        enforceSSL: true,
      });
    this.revocationTopic = topic('Revocation', 'meter: a key was revoked');
    this.financeTopic = topic('Finance', 'meter: monthly invoices are ready');
    this.alertsTopic = topic('Alerts', 'meter: an operator must look');
    // Customers' usage thresholds (plan quotas): API owners route them to e-mail, chat or webhooks.
    this.usageAlertsTopic = topic('UsageAlerts', 'meter: a customer reached a usage threshold');
    // The topic policy `enforceSSL` creates replaces SNS's default one, which let the account's
    // services publish: CloudWatch alarms need their own statement, scoped to this account's alarms.
    this.alertsTopic.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'AllowThisAccountsAlarms',
        actions: ['sns:Publish'],
        principals: [new iam.ServicePrincipal('cloudwatch.amazonaws.com')],
        resources: [this.alertsTopic.topicArn],
        conditions: {
          StringEquals: { 'aws:SourceAccount': Stack.of(this).account },
          ArnLike: { 'aws:SourceArn': Stack.of(this).formatArn({ service: 'cloudwatch', resource: 'alarm', resourceName: '*', arnFormat: ArnFormat.COLON_RESOURCE_NAME }) },
        },
      }),
    );
    if (settings.alarmEmail) {
      this.alertsTopic.addSubscription(new subscriptions.EmailSubscription(settings.alarmEmail));
    }
  }
}
