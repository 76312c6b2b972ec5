#!/usr/bin/env node
/**
 * The CDK app: one `meter-<env>` stack per environment of `environments.json`.
 *
 * Context: `env=NAME` (default: every environment, for the offline checks), `region=REGION` (default
 * `CDK_DEFAULT_REGION`, else us-east-1), `lambdaDir=DIR` (cargo-lambda's zips; default
 * `$CARGO_TARGET_DIR/lambda`, else `../target/lambda`), `environments=FILE`.
 */
import * as path from 'node:path';
import { App, Tags, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { MeterStack } from '../lib/meter-stack';
import { environmentNames, loadSettings } from '../lib/settings';

const app = new App();
const context = (name: string): string | undefined => app.node.tryGetContext(name);
const repo = path.resolve(__dirname, '..', '..');
const environments = path.resolve(context('environments') ?? path.join(repo, 'infra', 'environments.json'));
const lambdaDir = path.resolve(
  context('lambdaDir') ?? process.env.METER_LAMBDA_DIR ?? path.join(process.env.CARGO_TARGET_DIR ?? path.join(repo, 'target'), 'lambda'),
);
const region = context('region') ?? process.env.CDK_DEFAULT_REGION ?? 'us-east-1';
const selected = context('env');
for (const name of selected ? [selected] : environmentNames(environments)) {
  const settings = loadSettings(environments, name);
  const stack = new MeterStack(app, `meter-${name}`, {
    settings,
    lambdaDir,
    env: { account: process.env.CDK_DEFAULT_ACCOUNT, region },
    description: `meter (${name}): API usage metering and billing`,
  });
  Tags.of(stack).add('meter:environment', name);
}
Validations.of(app).addPlugins(new AwsSolutionsChecks(app, { verbose: true }));
