"""Deploys a synthesized stack into the local AWS emulator (moto) as `cdk deploy` would into an account.

It does what `cdk bootstrap` and `cdk deploy` do for file assets: creates the bootstrap bucket and
version parameter, uploads each asset of the stack's asset manifest, then creates the stack from the
template and waits for it. moto's CloudFormation skips resource types it does not model (Firehose,
Glue, Athena, alarms, API Gateway stages and authorizers, subscription filters); the stack must still
reach CREATE_COMPLETE, and scripts/verify-deployment checks what moto does hold.

Usage: deploy_to_emulator.py CDK_OUT STACK  (AWS_ENDPOINT_URL names the emulator)
"""

import json
import os
import sys
import time
from pathlib import Path

import boto3


def references(node) -> set:
    """The logical ids a template fragment refers to (Ref, Fn::GetAtt, Fn::Sub's ${Id})."""
    found = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str):
                found.add(value)
            elif key == "Fn::GetAtt":
                found.add(value[0] if isinstance(value, list) else value.split(".")[0])
            elif key == "Fn::Sub":
                text = value[0] if isinstance(value, list) else value
                found.update(part.split("}")[0].split(".")[0] for part in text.split("${")[1:])
            found |= references(value)
    elif isinstance(node, list):
        for value in node:
            found |= references(value)
    return found


def for_the_emulator(template: dict) -> tuple[dict, list[str]]:
    """The template moto can create: resources of types it does not model are left out, with every
    resource and output that refers to them or depends on them; moto's known faults are worked around (each named).
    Returns the template and what was left out (logical id and type)."""
    from moto.cloudformation.parsing import get_model_map

    modelled = get_model_map()
    resources = template.get("Resources", {})
    # moto 5.2.5 does not model function URLs (AWS::Lambda::Url): the URL is left out, and what only
    # reads its address (the report function's METER_LINKS_URL, an output) gets a stand-in address
    # instead of being left out with it.
    urls = {name for name, resource in resources.items() if resource["Type"] == "AWS::Lambda::Url"}

    def stand_in(node):
        if isinstance(node, dict):
            target = node.get("Fn::GetAtt")
            if isinstance(target, list) and target[0] in urls and target[1] == "FunctionUrl":
                return f"https://{target[0].lower()}.lambda-url.emulator.on.aws/"
            return {key: stand_in(value) for key, value in node.items()}
        if isinstance(node, list):
            return [stand_in(value) for value in node]
        return node

    template["Resources"] = resources = stand_in(resources)
    template["Outputs"] = stand_in(template.get("Outputs", {}))
    left_out = {name for name, resource in resources.items() if resource["Type"] not in modelled}
    changed = True
    while changed:
        changed = False
        for name, resource in resources.items():
            depends = resource.get("DependsOn", [])
            needs = references(resource.get("Properties", {})) | set([depends] if isinstance(depends, str) else depends)
            if name not in left_out and needs & left_out:
                left_out.add(name)
                changed = True
    report = sorted(f"{name} ({resources[name]['Type']})" for name in left_out)
    for name in left_out:
        del resources[name]
    outputs = template.get("Outputs", {})
    for name in [name for name, output in outputs.items() if references(output) & left_out]:
        del outputs[name]
    for resource in resources.values():
        # moto 5.2.5 reads CloudFormation tags of a KMS key by the API's field names and fails
        # (KeyError: 'TagKey'); the key's tags do not matter to the checks.
        if resource.get("Type") == "AWS::KMS::Key":
            resource.get("Properties", {}).pop("Tags", None)
    return template, report


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    cdk_out, stack = Path(sys.argv[1]), sys.argv[2]
    if not os.environ.get("AWS_ENDPOINT_URL"):
        print("AWS_ENDPOINT_URL must name the emulator: this script never deploys to a real account", file=sys.stderr)
        return 2
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    session = boto3.session.Session(region_name=region)
    account = session.client("sts").get_caller_identity()["Account"]
    s3 = session.client("s3")
    manifest = json.loads((cdk_out / f"{stack}.assets.json").read_text())
    if manifest.get("dockerImages"):
        print(f"{stack} has Docker image assets: the emulator deploy only handles files", file=sys.stderr)
        return 1

    def resolve(text: str) -> str:
        return text.replace("${AWS::AccountId}", account).replace("${AWS::Region}", region).replace(
            "${AWS::Partition}", "aws"
        )

    buckets = set()
    template_url = None
    for asset in manifest["files"].values():
        source = cdk_out / asset["source"]["path"]
        if asset["source"].get("packaging", "file") != "file" or not source.is_file():
            print(f"asset {source} is not a file: build the Lambda zips first", file=sys.stderr)
            return 1
        for destination in asset["destinations"].values():
            bucket, key = resolve(destination["bucketName"]), destination["objectKey"]
            if bucket not in buckets:
                s3.create_bucket(Bucket=bucket)
                buckets.add(bucket)
            if source.name == f"{stack}.template.json":
                template, left_out = for_the_emulator(json.loads(source.read_text()))
                print(f"left out (not modelled by the emulator, or referring to what is not): {len(left_out)}")
                for entry in left_out:
                    print(f"  {entry}")
                s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(template).encode())
            else:
                s3.upload_file(str(source), bucket, key)
            if source.name == f"{stack}.template.json":
                template_url = f"https://{bucket}.s3.amazonaws.com/{key}"
    session.client("ssm").put_parameter(
        Name="/cdk-bootstrap/hnb659fds/version", Value="30", Type="String", Overwrite=True
    )
    cloudformation = session.client("cloudformation")
    cloudformation.create_stack(
        StackName=stack,
        TemplateURL=template_url,
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        status = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]["StackStatus"]
        if status.endswith("_COMPLETE") or status.endswith("_FAILED"):
            break
        time.sleep(1)
    if status != "CREATE_COMPLETE":
        print(f"{stack}: {status}", file=sys.stderr)
        for event in cloudformation.describe_stack_events(StackName=stack)["StackEvents"]:
            if "FAILED" in event.get("ResourceStatus", ""):
                print(f"  {event['LogicalResourceId']}: {event.get('ResourceStatusReason')}", file=sys.stderr)
        return 1
    print(f"{stack}: {status} in the emulator ({len(manifest['files']) - 1} assets uploaded)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
