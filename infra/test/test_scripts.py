"""The deployment scripts' promises that can be checked without an account: clear errors for a wrong
call, an unknown environment, missing credentials, a missing tool, a stack that is not there; and
verify-deployment failing, naming the resource, when one is gone.

Runs after the smoke deploy of meter-staging into the emulator (AWS_ENDPOINT_URL).
Usage: test_scripts.py   Prints one line per test and a libtest-style summary; exits 1 on a failure.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "aws"))
import deployment  # noqa: E402


def script(name: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROOT / "scripts" / name), *args], capture_output=True, text=True,
                          env=env if env is not None else dict(os.environ), timeout=120)


def fails_with(done: subprocess.CompletedProcess, *phrases: str) -> None:
    assert done.returncode != 0, f"exit 0:\n{done.stdout}"
    for phrase in phrases:
        assert phrase in done.stderr + done.stdout, f"{phrase!r} not in:\n{done.stderr}{done.stdout}"


def test_a_wrong_call_prints_the_usage():
    fails_with(script("deploy", "staging"), "usage: scripts/deploy ENV REGION")
    fails_with(script("destroy"), "usage: scripts/destroy ENV REGION")
    fails_with(script("test-api-usage", "staging"), "usage: scripts/test-api-usage ENV KEY")


def test_an_unknown_environment_is_named_with_the_known_ones():
    for name, args in (("deploy", ("prd", "eu-west-1")), ("verify-deployment", ("prd",)), ("destroy", ("prd", "eu-west-1"))):
        fails_with(script(name, *args), 'unknown environment "prd"', "defines prod, staging")


def test_missing_credentials_are_named_before_anything_is_built():
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null",
               AWS_EC2_METADATA_DISABLED="true", AWS_REGION="eu-west-1")
    fails_with(script("deploy", "staging", "eu-west-1", env=env), "no usable AWS credentials", "AWS_PROFILE")
    fails_with(script("verify-deployment", "staging", env=env), "no usable AWS credentials")


def test_a_missing_tool_is_named_with_how_to_get_it():
    # A PATH with what the script itself needs, but no Node.js.
    bin_dir = Path(tempfile.mkdtemp(prefix="meter-path-"))
    for tool in ("bash", "python3", "sha256sum", "cut", "cat", "dirname", "mkdir", "env", "ls"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    env = dict(os.environ, PATH=str(bin_dir))
    fails_with(script("deploy", "staging", "us-east-1", env=env), "node is not installed", "Node.js 20")


def test_a_stack_that_is_not_deployed_says_how_to_deploy_it():
    fails_with(script("verify-deployment", "prod", "--emulator"), "meter-prod is not deployed", "scripts/deploy prod")


def test_verify_fails_and_names_a_resource_that_is_gone():
    outputs = {o["OutputKey"]: o["OutputValue"] for o in
               boto3.client("cloudformation").describe_stacks(StackName="meter-staging")["Stacks"][0]["Outputs"]}
    ok = script("verify-deployment", "staging", "--emulator")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    boto3.client("sns").delete_topic(TopicArn=outputs["FinanceTopicArn"])
    gone = script("verify-deployment", "staging", "--emulator")
    assert gone.returncode == 1, gone.stdout
    failures = [line for line in gone.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failures) == 1 and "meter-staging-finance" in failures[0], gone.stdout


def test_preflight_names_the_missing_api_gateway_logging_role_and_how_to_set_it():
    def preflight():
        return subprocess.run([sys.executable, str(ROOT / "scripts" / "aws" / "deployment.py"), "preflight", "staging"],
                              capture_output=True, text=True, timeout=120)
    apigateway = boto3.client("apigateway")
    apigateway.update_account(patchOperations=[{"op": "replace", "path": "/cloudwatchRoleArn", "value": ""}])
    fails_with(preflight(), "no CloudWatch Logs role", "AmazonAPIGatewayPushToCloudWatchLogs", "update-account")
    role = "arn:aws:iam::123456789012:role/apigateway-cloudwatch"
    apigateway.update_account(patchOperations=[{"op": "replace", "path": "/cloudwatchRoleArn", "value": role}])
    ready = preflight()
    assert ready.returncode == 0 and "ready to deploy" in ready.stdout, ready.stdout + ready.stderr


def test_preflight_weighs_the_concurrency_quota_against_what_the_stack_reserves():
    prod = {"transformerReservedConcurrency": 10, "linksReservedConcurrency": 2}
    assert deployment.concurrency_findings(1000, prod, "eu-west-1") == ([], [])
    problems, _ = deployment.concurrency_findings(100, prod, "eu-west-1")
    assert len(problems) == 1 and "ask for at least 112" in problems[0], problems
    assert "transformerReservedConcurrency 10, linksReservedConcurrency 2" in problems[0], problems
    problems, _ = deployment.concurrency_findings(110, prod, "eu-west-1")
    assert len(problems) == 1, "the links' reservation counts too"
    none = {"transformerReservedConcurrency": 0, "linksReservedConcurrency": 0}
    problems, notes = deployment.concurrency_findings(10, none, "eu-west-1")
    assert problems == [] and len(notes) == 1 and "quota in eu-west-1 is 10" in notes[0]
    assert deployment.concurrency_findings(None, prod, "eu-west-1") == ([], [])


def test_a_key_that_is_not_a_meter_key_is_refused():
    assert deployment.key_id_of("mk_0123456789ab_s3cr3tS3cr3t") == "0123456789ab"
    for bad in ("", "0123456789ab", "mk_0123456789AB_x", "mk_0123456789ab", "sk_0123456789ab_x"):
        try:
            deployment.key_id_of(bad)
        except deployment.Failure as err:
            assert "not a meter key" in str(err)
        else:
            raise AssertionError(f"{bad!r} accepted")


def test_the_meter_already_built_is_used_before_building_one():
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bare = {"PATH": str(root / "bin")}
        assert deployment.meter_binary(root, bare) is None, "nothing built: build"
        built = root / "target" / "release" / "meter"
        built.parent.mkdir(parents=True)
        built.write_text("#!/bin/sh\n")
        built.chmod(0o755)
        assert deployment.meter_binary(root, bare) == str(built), "the checkout's release build"
        own = root / "elsewhere" / "release" / "meter"
        own.parent.mkdir(parents=True)
        own.write_text("#!/bin/sh\n")
        own.chmod(0o755)
        assert deployment.meter_binary(root, {**bare, "CARGO_TARGET_DIR": str(root / "elsewhere")}) == str(own)
        (root / "bin").mkdir()
        (root / "bin" / "meter").symlink_to(built)
        assert deployment.meter_binary(root, bare) == str(root / "bin" / "meter"), "PATH first"
        assert deployment.meter_binary(root, {**bare, "METER_BIN": "/opt/meter"}) == "/opt/meter", "METER_BIN first"


def test_local_without_a_server_says_to_start_one():
    env = dict(os.environ, METER_SERVE_URL="http://127.0.0.1:9")
    fails_with(script("test-api-usage", "local", "mk_0123456789ab_x", env=env), "nothing answers at http://127.0.0.1:9", "meter serve")


def main() -> int:
    tests = [(name, fn) for name, fn in globals().items() if name.startswith("test_")]
    failed = 0
    for name, fn in tests:
        try:
            fn()
            print(f"ok    {name}")
        except Exception:  # noqa: BLE001 - every failure is reported, then the next test runs
            failed += 1
            print(f"FAIL  {name}\n{traceback.format_exc()}")
    status = "ok" if failed == 0 else "FAILED"
    print(f"test result: {status}. {len(tests) - failed} passed; {failed} failed; 0 ignored (deployment scripts)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
