/**
 * The project's Lambda functions: pre-built cargo-lambda zips on `provided.al2023`, each with its own log
 * group, role, and (when invoked asynchronously) a queue that keeps the events it could not handle.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as destinations from 'aws-cdk-lib/aws-lambda-destinations';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { acknowledge } from './nag';

/** The binaries `scripts/build-lambdas` zips, one folder each under the Lambda directory. */
export const BINARIES = [
  'authorizer',
  'cache-invalidator',
  'archive-transformer',
  'reconcile-job',
  'monthly-report',
  'report-links',
  'example-backend',
] as const;
export type Binary = (typeof BINARIES)[number];

/** Where a binary's `bootstrap.zip` is, or an error that says how to build it. */
export function zipOf(lambdaDir: string, binary: Binary): string {
  const zip = path.join(lambdaDir, binary, 'bootstrap.zip');
  if (!fs.existsSync(zip)) {
    throw new Error(
      `${zip} is missing: build the Lambdas first (scripts/build-lambdas), or point -c lambdaDir=DIR at them`,
    );
  }
  return zip;
}

export interface MeterFunctionProps {
  readonly binary: Binary;
  /** `meter-<env>-<binary>`. */
  readonly functionName: string;
  readonly lambdaDir: string;
  readonly memoryMiB: number;
  readonly timeout: Duration;
  readonly environment: Record<string, string>;
  readonly logRetention: logs.RetentionDays;
  /** Invoked asynchronously (SNS, EventBridge): failed events go to a queue, kept 14 days. */
  readonly asynchronous?: boolean;
  readonly reservedConcurrency?: number;
  readonly description: string;
}

/** One function of the project, with its log group and, if asynchronous, its failure queue. */
export class MeterFunction extends Construct {
  readonly function: lambda.Function;
  readonly logGroup: logs.LogGroup;
  /** Events the function failed on after Lambda's retries (asynchronous functions only). */
  readonly failures?: sqs.Queue;

  constructor(scope: Construct, id: string, props: MeterFunctionProps) {
    super(scope, id);
    // Created here rather than by Lambda on first log line, so that retention is set and the group goes
    // with the stack.
    this.logGroup = new logs.LogGroup(this, 'Logs', {
      logGroupName: `/aws/lambda/${props.functionName}`,
      retention: props.logRetention,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    if (props.asynchronous) {
      this.failures = new sqs.Queue(this, 'Failures', {
        queueName: `${props.functionName}-failures`,
        retentionPeriod: Duration.days(14),
        encryption: sqs.QueueEncryption.SQS_MANAGED,
        enforceSSL: true,
      });
      acknowledge(this.failures, {
        id: 'AwsSolutions-SQS3',
        reason: "This queue is itself where the function's failed events end up (its on-failure destination)",
      });
    }
    const role = new iam.Role(this, 'Role', {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      description: `${props.functionName}: its logs, and what it is granted beside`,
    });
    // The log group is known, so the role writes to it alone (not the managed policy's `*`).
    role.addToPolicy(
      new iam.PolicyStatement({
        actions: ['logs:CreateLogStream', 'logs:PutLogEvents'],
        resources: [this.logGroup.logGroupArn],
      }),
    );
    this.function = new lambda.Function(this, 'Function', {
      functionName: props.functionName,
      description: props.description,
      runtime: lambda.Runtime.PROVIDED_AL2023,
      architecture: lambda.Architecture.X86_64,
      handler: 'bootstrap',
      code: lambda.Code.fromAsset(zipOf(props.lambdaDir, props.binary)),
      memorySize: props.memoryMiB,
      timeout: props.timeout,
      role,
      logGroup: this.logGroup,
      environment: { METER_LOG: 'info', ...props.environment },
      reservedConcurrentExecutions: props.reservedConcurrency,
      ...(this.failures
        ? {
            onFailure: new destinations.SqsDestination(this.failures),
            retryAttempts: 2,
            maxEventAge: Duration.hours(6),
          }
        : {}),
    });
  }
}
