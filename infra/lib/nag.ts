/**
 * cdk-nag's AwsSolutions findings this design accepts, each with its reason. Everything else is an error
 * that fails the synth.
 */
import { type CfnResource, Stack, Validations } from 'aws-cdk-lib';
import type { IConstruct } from 'constructs';

export interface Acknowledgement {
  readonly id: string;
  readonly reason: string;
}

/** Acknowledges findings on one construct (and what it contains). */
export function acknowledge(scope: IConstruct, ...findings: Acknowledgement[]): void {
  for (const finding of findings) Validations.of(scope).acknowledge(finding);
}

/** How cdk-nag names a resource's ARN in a finding (`<LogicalId.Arn>`). */
export function arnToken(resource: IConstruct): string {
  const cfn = resource.node.defaultChild as CfnResource;
  const stack = Stack.of(resource);
  return `<${stack.resolve(stack.getLogicalId(cfn))}.Arn>`;
}
