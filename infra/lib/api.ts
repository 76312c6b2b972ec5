/**
 * Where the authorizer sits: the example API (a REST API whose every route goes through the authorizer
 * to a tiny backend that prints the usage line), and/or an existing REST or HTTP API it is attached to.
 */
import { Duration, Stack } from 'aws-cdk-lib';
import * as apigateway from 'aws-cdk-lib/aws-apigateway';
import * as apigatewayv2 from 'aws-cdk-lib/aws-apigatewayv2';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { acknowledge } from './nag';
import type { EnvironmentSettings, ExistingApi } from './settings';

/** How long API Gateway caches an authorizer's answer: the authorizer's own cache (CONTRACTS.md §9). */
export const AUTHORIZER_RESULT_TTL = Duration.seconds(30);
/** The header that carries the API key (the authorizer's `METER_IDENTITY_HEADER`). */
export const KEY_HEADER = 'x-api-key';
/** The example API's stage. */
export const EXAMPLE_STAGE = 'api';

/** A stage whose authorizer cache the invalidator flushes: `rest:API_ID/STAGE` or `http:API_ID/STAGE`. */
export interface FlushTarget {
  readonly spec: string;
  /** The API Gateway management ARN of that stage's authorizer cache. */
  readonly cacheArn: string;
}

function flushTarget(kind: 'rest' | 'http', apiId: string, stage: string, region: string, partition: string): FlushTarget {
  const collection = kind === 'rest' ? 'restapis' : 'apis';
  return {
    spec: `${kind}:${apiId}/${stage}`,
    cacheArn: `arn:${partition}:apigateway:${region}::/${collection}/${apiId}/stages/${stage}/cache/authorizers`,
  };
}

export interface ExampleApiProps {
  readonly settings: EnvironmentSettings;
  readonly authorizer: lambda.IFunction;
  readonly backend: lambda.IFunction;
}

/** The example API: `GET /v1/items/{id}` and friends (example-api/src/lib.rs), all behind the authorizer. */
export class ExampleApi extends Construct {
  readonly api: apigateway.RestApi;
  readonly flushTarget: FlushTarget;

  constructor(scope: Construct, id: string, props: ExampleApiProps) {
    super(scope, id);
    const accessLogs = new logs.LogGroup(this, 'AccessLogs', {
      logGroupName: `/meter/${props.settings.name}/example-api/access`,
      retention: props.settings.logRetentionDays as logs.RetentionDays,
    });
    const authorizer = new apigateway.RequestAuthorizer(this, 'Authorizer', {
      authorizerName: `meter-${props.settings.name}`,
      handler: props.authorizer,
      identitySources: [apigateway.IdentitySource.header(KEY_HEADER)],
      resultsCacheTtl: AUTHORIZER_RESULT_TTL,
    });
    this.api = new apigateway.RestApi(this, 'Api', {
      restApiName: `meter-${props.settings.name}-example`,
      description: 'meter example API: every call goes through the meter authorizer and is metered',
      endpointTypes: [apigateway.EndpointType.REGIONAL],
      cloudWatchRole: false,
      deployOptions: {
        stageName: EXAMPLE_STAGE,
        accessLogDestination: new apigateway.LogGroupLogDestination(accessLogs),
        accessLogFormat: apigateway.AccessLogFormat.jsonWithStandardFields(),
        throttlingRateLimit: 1000,
        throttlingBurstLimit: 2000,
        metricsEnabled: true,
      },
      defaultMethodOptions: { authorizer, authorizationType: apigateway.AuthorizationType.CUSTOM },
      defaultIntegration: new apigateway.LambdaIntegration(props.backend),
    });
    this.api.root.addProxy({ anyMethod: true });
    acknowledge(
      this.api,
      { id: 'AwsSolutions-APIG2', reason: 'The example API takes GET requests without bodies; the authorizer validates the key' },
      {
        id: 'AwsSolutions-APIG3',
        reason: 'WAF is the API owner\'s choice and cost; the example API is throttled at the stage instead',
      },
      {
        id: 'AwsSolutions-APIG6',
        reason:
          'Execution logging needs an account-wide API Gateway CloudWatch role this stack must not own; access logs are on',
      },
      { id: 'AwsSolutions-COG4', reason: "API keys are checked by meter's Lambda authorizer: that is the product" },
    );
    this.flushTarget = flushTarget('rest', this.api.restApiId, EXAMPLE_STAGE, Stack.of(this).region, Stack.of(this).partition);
  }
}

/** The authorizer, attached to an API the team already runs; its methods or routes then name it. */
export class ExistingApiAuthorizer extends Construct {
  readonly authorizerId: string;
  readonly flushTarget: FlushTarget;

  constructor(scope: Construct, id: string, api: ExistingApi, settings: EnvironmentSettings, fn: lambda.IFunction) {
    super(scope, id);
    const stack = Stack.of(this);
    const invokeUri = `arn:${stack.partition}:apigateway:${stack.region}:lambda:path/2015-03-31/functions/${fn.functionArn}/invocations`;
    const sourceArn = stack.formatArn({
      service: 'execute-api',
      resource: api.apiId,
      resourceName: 'authorizers/*',
    });
    fn.addPermission('InvokedByExistingApi', {
      principal: new iam.ServicePrincipal('apigateway.amazonaws.com'),
      sourceArn,
    });
    if (api.kind === 'rest') {
      const authorizer = new apigateway.CfnAuthorizer(this, 'Rest', {
        restApiId: api.apiId,
        name: `meter-${settings.name}`,
        type: 'REQUEST',
        identitySource: `method.request.header.${KEY_HEADER}`,
        authorizerUri: invokeUri,
        authorizerResultTtlInSeconds: AUTHORIZER_RESULT_TTL.toSeconds(),
      });
      this.authorizerId = authorizer.ref;
    } else {
      const authorizer = new apigatewayv2.CfnAuthorizer(this, 'Http', {
        apiId: api.apiId,
        name: `meter-${settings.name}`,
        authorizerType: 'REQUEST',
        identitySource: [`$request.header.${KEY_HEADER}`],
        authorizerUri: invokeUri,
        authorizerPayloadFormatVersion: '2.0',
        enableSimpleResponses: true,
        authorizerResultTtlInSeconds: AUTHORIZER_RESULT_TTL.toSeconds(),
      });
      this.authorizerId = authorizer.ref;
    }
    this.flushTarget = flushTarget(api.kind, api.apiId, api.stage, stack.region, stack.partition);
  }
}
