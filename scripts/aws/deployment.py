"""What scripts/verify-deployment, scripts/test-api-usage and scripts/destroy do against a deployed stack.

Each command reads the stack `meter-<ENV>` (its outputs name every resource) and talks to AWS with
boto3 and the standard AWS settings. With AWS_ENDPOINT_URL set it talks to the local emulator instead;
`verify --emulator` then skips, one line each, what the emulator's CloudFormation does not model.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import tempfile
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import boto3
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

ROOT = Path(__file__).resolve().parents[2]
ENVIRONMENTS = ROOT / "infra" / "environments.json"


class Failure(Exception):
    """A problem the user can act on; printed without a traceback."""


def known_environment(name: str) -> None:
    names = [n for n in json.loads(ENVIRONMENTS.read_text()) if not n.startswith("$")]
    if name not in names and name != "local":
        raise Failure(f'unknown environment "{name}": {ENVIRONMENTS.relative_to(ROOT)} defines {", ".join(names)}')


def session(region: str | None) -> boto3.session.Session:
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    try:
        made = boto3.session.Session(region_name=region) if region else boto3.session.Session()
        if not made.region_name:
            raise Failure("no AWS region: pass REGION or set AWS_REGION")
        made.client("sts").get_caller_identity()
        return made
    except (NoCredentialsError, NoRegionError) as err:
        raise Failure(f"no usable AWS credentials ({err}): set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY") from err
    except ClientError as err:
        raise Failure(f"the AWS credentials are refused: {err}") from err
    except BotoCoreError as err:
        raise Failure(f"cannot reach AWS: {err}") from err


def stack_outputs(aws: boto3.session.Session, env: str) -> dict[str, str]:
    stack = f"meter-{env}"
    try:
        found = aws.client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0]
    except ClientError as err:
        raise Failure(f"stack {stack} is not deployed in {aws.region_name} ({err.response['Error']['Message']}): run scripts/deploy {env} {aws.region_name}") from err
    if not found["StackStatus"].endswith("_COMPLETE") or "ROLLBACK" in found["StackStatus"]:
        raise Failure(f"stack {stack} is {found['StackStatus']}")
    return {o["OutputKey"]: o["OutputValue"] for o in found.get("Outputs", [])}


# --- verify -------------------------------------------------------------------------------------------

@dataclass
class Checks:
    emulator: bool
    failed: int = 0
    skipped: int = 0
    lines: list[str] = field(default_factory=list)

    def check(self, what: str, probe, *, modelled: bool = True) -> None:
        """Runs `probe` (returns a detail string, raises on a problem) and prints one line."""
        if self.emulator and not modelled:
            self.skipped += 1
            print(f"skip  {what}: not modelled by the emulator's CloudFormation", flush=True)
            return
        try:
            detail = probe()
            print(f"ok    {what}{': ' + detail if detail else ''}", flush=True)
        except (ClientError, BotoCoreError, Failure, KeyError, AssertionError) as err:
            self.failed += 1
            print(f"FAIL  {what}: {describe(err)}", flush=True)


def describe(err: Exception) -> str:
    if isinstance(err, ClientError):
        return f"{err.response['Error'].get('Code')}: {err.response['Error'].get('Message')}"
    if isinstance(err, KeyError):
        return f"the stack has no output {err}"
    return str(err) or type(err).__name__


def expect(condition: bool, problem: str) -> None:
    if not condition:
        raise Failure(problem)


def verify(args: argparse.Namespace) -> int:
    known_environment(args.env)
    aws = session(args.region)
    out = stack_outputs(aws, args.env)
    emulator = args.emulator
    checks = Checks(emulator)
    ddb, s3, sns, lam, logs = (aws.client(n) for n in ("dynamodb", "s3", "sns", "lambda", "logs"))

    def table(name: str, index: str | None = None):
        def probe():
            described = ddb.describe_table(TableName=name)["Table"]
            expect(described["TableStatus"] == "ACTIVE", f"status {described['TableStatus']}")
            expect(described.get("BillingModeSummary", {}).get("BillingMode") == "PAY_PER_REQUEST", "not on-demand")
            if index:
                names = [i["IndexName"] for i in described.get("GlobalSecondaryIndexes", [])]
                expect(index in names, f"index {index} missing (has {names})")
            return "active, on-demand" + (f", index {index}" if index else "")
        return probe

    def recovery(name: str):
        def probe():
            backups = ddb.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
            expect(backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED", "point-in-time recovery is off")
            return "enabled"
        return probe

    def ttl(name: str, attribute: str):
        def probe():
            spec = ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
            expect(spec.get("AttributeName") == attribute and spec.get("TimeToLiveStatus") in ("ENABLED", "ENABLING"), f"TTL on {attribute} is off")
            return f"on {attribute}"
        return probe

    # moto's CloudFormation creates tables and buckets but ignores some of their properties: those are
    # checked on their own lines, so that the emulator run still checks the rest.
    for output, index in (("ApiKeysTable", "hashedKey-index"), ("UsageCountersTable", None)):
        checks.check(f"table {out[output]}", table(out[output], index))
        checks.check(f"table {out[output]} point-in-time recovery", recovery(out[output]), modelled=False)
    checks.check(f"table {out['UsageCountersTable']} TTL", ttl(out["UsageCountersTable"], "expiresAt"), modelled=False)

    def bucket(name: str):
        def probe():
            s3.head_bucket(Bucket=name)
            rules = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"]
            expect(bool(rules), "not encrypted")
            return "encrypted"
        return probe

    def private(name: str, versioned: bool):
        def probe():
            if versioned:
                expect(s3.get_bucket_versioning(Bucket=name).get("Status") == "Enabled", "versioning is off")
            block = s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]
            expect(all(block.values()), "public access is not fully blocked")
            policy = s3.get_bucket_policy(Bucket=name)["Policy"]
            expect("aws:SecureTransport" in policy, "the bucket policy does not refuse plain HTTP")
            return "public access blocked, TLS only" + (", versioned" if versioned else "")
        return probe

    for output, versioned in (("ArchiveBucket", True), ("ReportsBucket", True), ("AthenaResultsBucket", False), ("AccessLogsBucket", False)):
        if output in out:
            checks.check(f"bucket {out[output]}", bucket(out[output]))
            checks.check(f"bucket {out[output]} access and versioning", private(out[output], versioned), modelled=False)

    def pricing():
        match = re.match(r"s3://([^/]+)/(.+)", out["PricingObject"])
        s3.head_object(Bucket=match.group(1), Key=match.group(2))
        return out["PricingObject"]

    checks.check("pricing for the monthly report", pricing)

    for output in ("RevocationTopicArn", "FinanceTopicArn", "AlertsTopicArn"):
        def probe(arn=out[output]):
            attributes = sns.get_topic_attributes(TopicArn=arn)["Attributes"]
            expect(bool(attributes.get("KmsMasterKeyId")), "not encrypted")
            return "encrypted"
        checks.check(f"topic {out[output].rsplit(':', 1)[-1]}", probe)

    def subscribed():
        arns = [s["Endpoint"] for s in sns.list_subscriptions_by_topic(TopicArn=out["RevocationTopicArn"])["Subscriptions"]]
        expect(any("cache-invalidator" in arn for arn in arns), f"the cache invalidator is not subscribed ({arns})")
        return "cache invalidator subscribed"

    checks.check("revocation reaches the cache invalidator", subscribed, modelled=False)

    def links_answer():
        # Unsigned, so it must be the function's own refusal: a missing invoke permission would be
        # Lambda's bare `{"Message":"Forbidden"}` instead.
        url = out["LinksUrl"].rstrip("/") + "/issued/month=2000-01/manifest.json"
        try:
            urllib.request.urlopen(url, timeout=15)
            raise Failure(f"{url} answered an unsigned link")
        except urllib.error.HTTPError as err:
            body = err.read().decode(errors="replace")
            expect(err.code == 403 and "not signed" in body, f"{err.code} {body[:120]!r}: the function URL does not reach report-links")
        except urllib.error.URLError as err:
            raise Failure(f"{url}: {err.reason}") from err
        return "the function URL refuses an unsigned link itself (403)"

    checks.check("finance links' function URL", links_answer, modelled=False)

    for name in out["Functions"].split(","):
        def probe(name=name):
            config = lam.get_function(FunctionName=name)["Configuration"]
            expect(config.get("State", "Active") == "Active", f"state {config.get('State')}")
            expect(config["Runtime"] == "provided.al2023", f"runtime {config['Runtime']}")
            groups = logs.describe_log_groups(logGroupNamePrefix=f"/aws/lambda/{name}")["logGroups"]
            expect(any(g["logGroupName"] == f"/aws/lambda/{name}" and g.get("retentionInDays") for g in groups), "no log group with a retention")
            return f"{config['Runtime']}, {config['MemorySize']} MB, logs kept"
        checks.check(f"function {name}", probe)

    sqs = aws.client("sqs")
    for name in filter(None, out["FailureQueues"].split(",")):
        def probe(name=name):
            url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
            depth = int(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]["ApproximateNumberOfMessages"])
            expect(depth == 0, f"{depth} failed events wait: read them, fix the cause, redrive")
            return "empty"
        checks.check(f"failure queue {name}", probe)

    events = aws.client("events")
    for name in out["Schedules"].split(","):
        def probe(name=name):
            rule = events.describe_rule(Name=name)
            expect(rule["State"] == "ENABLED", f"state {rule['State']}")
            targets = events.list_targets_by_rule(Rule=name)["Targets"]
            expect(len(targets) == 1, f"{len(targets)} targets")
            return rule["ScheduleExpression"]
        checks.check(f"schedule {name}", probe)

    def dashboard():
        name = out["Dashboard"].rsplit("name=", 1)[-1]
        body = json.loads(aws.client("cloudwatch").get_dashboard(DashboardName=name)["DashboardBody"])
        return f"{name}, {len(body.get('widgets', []))} widgets"

    checks.check("dashboard", dashboard)

    def alarms():
        names = out["Alarms"].split(",")
        found = []
        for start in range(0, len(names), 100):
            found += aws.client("cloudwatch").describe_alarms(AlarmNames=names[start:start + 100])["MetricAlarms"]
        missing = sorted(set(names) - {a["AlarmName"] for a in found})
        expect(not missing, f"missing: {', '.join(missing)}")
        firing = sorted(a["AlarmName"] for a in found if a["StateValue"] == "ALARM")
        expect(not firing, f"in ALARM: {', '.join(firing)}")
        return f"{len(found)} alarms, none firing"

    checks.check("alarms", alarms, modelled=False)

    def log_group():
        name = out["UsageLogGroup"]
        groups = logs.describe_log_groups(logGroupNamePrefix=name)["logGroups"]
        expect(any(g["logGroupName"] == name for g in groups), "missing")
        return name

    checks.check("usage log group", log_group)

    def subscription():
        filters = logs.describe_subscription_filters(logGroupName=out["UsageLogGroup"])["subscriptionFilters"]
        mine = [f for f in filters if f["filterName"] == out["DeliveryStream"]]
        expect(bool(mine), f"no subscription filter {out['DeliveryStream']}")
        expect(mine[0]["filterPattern"] == '"API_USAGE"', f"pattern {mine[0]['filterPattern']}")
        return f"{mine[0]['filterPattern']} → Firehose"

    checks.check("usage subscription", subscription, modelled=False)

    def delivery_stream():
        described = aws.client("firehose").describe_delivery_stream(DeliveryStreamName=out["DeliveryStream"])
        status = described["DeliveryStreamDescription"]["DeliveryStreamStatus"]
        expect(status == "ACTIVE", f"status {status}")
        return "active"

    checks.check(f"Firehose {out.get('DeliveryStream')}", delivery_stream, modelled=False)

    def glue_table():
        database, name = out["GlueTable"].split(".")
        got = aws.client("glue").get_table(DatabaseName=database, Name=name)["Table"]
        expect(got.get("Parameters", {}).get("projection.enabled") == "true", "partition projection is off")
        return "partition projection on"

    checks.check(f"Glue table {out.get('GlueTable')}", glue_table, modelled=False)

    def workgroup():
        got = aws.client("athena").get_work_group(WorkGroup=out["AthenaWorkgroup"])["WorkGroup"]
        expect(got["State"] == "ENABLED", f"state {got['State']}")
        return f"scan limit {got['Configuration'].get('BytesScannedCutoffPerQuery', 0) // 10**9} GB"

    checks.check(f"Athena workgroup {out.get('AthenaWorkgroup')}", workgroup, modelled=False)

    if "ExampleApiId" in out:
        apigw = aws.client("apigateway")

        def api():
            apigw.get_rest_api(restApiId=out["ExampleApiId"])
            return out["ExampleApiId"]

        def authorizer():
            found = apigw.get_authorizers(restApiId=out["ExampleApiId"])["items"]
            expect(len(found) == 1, f"{len(found)} authorizers")
            expect(found[0].get("authorizerResultTtlInSeconds") == 30, f"result TTL {found[0].get('authorizerResultTtlInSeconds')}")
            return "request authorizer, 30 s result TTL"

        checks.check("example API", api)
        checks.check("example API authorizer", authorizer, modelled=False)
        checks.check("example API answers", lambda: probe_api(out["ApiUrl"]), modelled=False)

    summary = f"{checks.failed} failed" + (f", {checks.skipped} skipped (emulator)" if checks.skipped else "")
    print(f"meter-{args.env}: {summary}")
    return 1 if checks.failed else 0


def probe_api(url: str) -> str:
    status, _ = call(url.rstrip("/") + "/v1/ping", None)
    expect(status in (401, 403), f"a call without a key got {status}, not 401/403")
    return "refuses a call without a key"


# --- test-api-usage -----------------------------------------------------------------------------------

def call(url: str, key: str | None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"x-api-key": key} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def meter_binary(root: Path = ROOT, environ: dict[str, str] | None = None) -> str | None:
    """The `meter` already built: METER_BIN, then `meter` on PATH, then the checkout's own release build
    (where the README's `cargo run --release -p meter -- demo` puts it: the user's CARGO_TARGET_DIR,
    or target/ of the checkout). None when there is none yet."""
    environ = os.environ if environ is None else environ
    if environ.get("METER_BIN"):
        return environ["METER_BIN"]
    on_path = shutil.which("meter", path=environ.get("PATH"))
    if on_path:
        return on_path
    target = Path(environ["CARGO_TARGET_DIR"]) if environ.get("CARGO_TARGET_DIR") else root / "target"
    built = target / "release" / "meter"
    return str(built) if built.is_file() and os.access(built, os.X_OK) else None


def meter(args: list[str], env: dict[str, str], *, json_out: bool = True) -> dict:
    binary = meter_binary()
    # None built yet: build it where the user's own builds go (never a second cache of ours).
    command = [binary] if binary else ["cargo", "run", "--quiet", "--release", "-p", "meter", "--"]
    done = subprocess.run(command + args, env=env, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise Failure(f"meter {' '.join(args)} failed: {done.stderr.strip()}")
    return json.loads(done.stdout) if json_out else {}


def key_id_of(key: str) -> str:
    match = re.fullmatch(r"mk_([0-9a-hjkmnp-tv-z]{12})_[0-9A-Za-z]+", key)
    if not match:
        raise Failure("KEY is not a meter key (mk_<id>_<secret>); create one with meter keys create")
    return match.group(1)


def test_api_usage(args: argparse.Namespace) -> int:
    known_environment(args.env)
    if args.env == "local":
        # `meter serve` on this machine; the meter command line uses the same METER_HOME/METER_STORE.
        base = os.environ.get("METER_SERVE_URL", "http://127.0.0.1:8080").rstrip("/")
        env = dict(os.environ)
        try:
            call(base + "/v1/ping", None)
        except (urllib.error.URLError, OSError) as err:
            raise Failure(f"nothing answers at {base} ({err}): start `meter serve` (or set METER_SERVE_URL)") from err
        exercise(base, env, args)
        return quota_check(base, env, args)
    aws = session(args.region)
    out = stack_outputs(aws, args.env)
    if "ApiUrl" not in out:
        raise Failure(f"meter-{args.env} has no example API: test your own API's usage with meter usage show")
    env = dict(os.environ, METER_STORE=out["MeterStore"], METER_ARCHIVE=out["MeterArchive"],
               METER_REVOCATION_TOPIC=out["RevocationTopicArn"], AWS_REGION=aws.region_name)
    return exercise(out["ApiUrl"].rstrip("/"), env, args)


def exercise(base: str, env: dict[str, str], args: argparse.Namespace) -> int:
    """The calls, the wait for exact counters, the revocation: the same against AWS and `meter serve`."""
    key_id = key_id_of(args.key)
    before = meter(["usage", "show", key_id, "--json"], env)
    plan = [("/v1/items/1", 200, True)] * args.billable + [
        ("/v1/missing", 404, False), ("/v1/fail", 500, False), ("/v1/ping", 200, False)]
    started = time.monotonic()
    for path, expected, _ in plan:
        status, body = call(base + path, args.key)
        if status != expected:
            raise Failure(f"GET {path} answered {status}, expected {expected}: {body[:200]}")
    billable = sum(1 for _, _, counted in plan if counted)
    failed = sum(1 for _, status, _ in plan if status >= 400)
    print(f"called the API: {billable} billable, {failed} failed, 1 not counted (shouldCount false)")
    want = (before["successfulCalls"] + billable, before["failedCalls"] + failed, before["usageCount"] + len(plan))
    deadline = started + args.timeout
    while True:
        now = meter(["usage", "show", key_id, "--json"], env)
        got = (now["successfulCalls"], now["failedCalls"], now["usageCount"])
        if got == want:
            print(f"usage exact after {time.monotonic() - started:.0f} s: successfulCalls {got[0]}, failedCalls {got[1]}, usageCount {got[2]}")
            break
        if any(g > w for g, w in zip(got, want)) or time.monotonic() > deadline:
            raise Failure(f"counters show {got} (successful, failed, usage), expected {want}")
        time.sleep(2)

    throwaway = meter(["keys", "create", "--email", f"test-api-usage+{uuid.uuid4().hex[:8]}@example.com", "--json"], env)
    deadline = time.monotonic() + 60
    while call(base + "/v1/ping", throwaway["key"])[0] != 200:
        if time.monotonic() > deadline:
            raise Failure("a new key is not accepted within 60 s")
        time.sleep(1)
    meter(["keys", "revoke", throwaway["id"]], env, json_out=False)
    revoked = time.monotonic()
    while True:
        status, _ = call(base + "/v1/ping", throwaway["key"])
        if status in (401, 403):
            print(f"revoked key refused after {time.monotonic() - revoked:.1f} s")
            return 0
        if time.monotonic() - revoked > args.timeout:
            raise Failure(f"the revoked key still answers {status} after {args.timeout} s")
        time.sleep(0.5)


QUOTA_CHECK_CALLS = 3


def quota_check(base: str, env: dict[str, str], args: argparse.Namespace) -> int:
    """A throwaway key under a tiny hard quota: its calls are served up to the quota, then refused with
    429 within the bound (local only: on AWS the key would put a test customer on the month's invoices,
    and a REST API's refusal is its 403 until the gateway response maps it)."""
    with tempfile.TemporaryDirectory() as tmp:
        pricing = Path(tmp) / "pricing.toml"
        # The default plan, so that the key bills under the real pricing's default plan like any other.
        pricing.write_text(
            'currency = "USD"\ndefault_plan = "quota-check"\n[plans.quota-check]\nmonthly_fee = "0.00"\n'
            f'tiers = [{{ price_per_1000 = "0.00" }}]\nquota = {{ calls = {QUOTA_CHECK_CALLS}, mode = "hard" }}\n'
        )
        key = meter(["keys", "create", "--email", f"test-api-usage+quota-{uuid.uuid4().hex[:8]}@example.com",
                     "--pricing", str(pricing), "--json"], env)
    served, crossed = 0, None
    try:
        while True:
            status, body = call(base + "/v1/items/1", key["key"])
            if status == 200:
                served += 1
                if served == QUOTA_CHECK_CALLS + 1:
                    crossed = time.monotonic()
            elif status == 429:
                if served < QUOTA_CHECK_CALLS:
                    raise Failure(f"refused after {served} calls, before its quota of {QUOTA_CHECK_CALLS}: {body[:200]}")
                waited = time.monotonic() - crossed if crossed else 0.0
                print(f"quota of {QUOTA_CHECK_CALLS} calls: refused with 429 {waited:.1f} s after the crossing call "
                      f"({served - QUOTA_CHECK_CALLS} served beyond it)")
                return 0
            else:
                raise Failure(f"GET /v1/items/1 answered {status} under a quota: {body[:200]}")
            if crossed and time.monotonic() - crossed > args.timeout:
                raise Failure(f"still served {args.timeout} s after passing a quota of {QUOTA_CHECK_CALLS} calls")
            time.sleep(0.2)
    finally:
        meter(["keys", "revoke", key["id"]], env, json_out=False)


# --- destroy ------------------------------------------------------------------------------------------

def destroy(args: argparse.Namespace) -> int:
    """Deletes the stack (CloudFormation keeps the tables and buckets it retains); with --delete-data,
    then deletes those too."""
    known_environment(args.env)
    aws = session(args.region)
    out = stack_outputs(aws, args.env)
    stack = f"meter-{args.env}"
    cloudformation = aws.client("cloudformation")
    cloudformation.delete_stack(StackName=stack)
    print(f"deleting {stack} …", flush=True)
    cloudformation.get_waiter("stack_delete_complete").wait(StackName=stack, WaiterConfig={"Delay": 10, "MaxAttempts": 180})
    print(f"deleted {stack}")
    if not args.delete_data:
        print(f"kept the tables and buckets (scripts/destroy {args.env} {aws.region_name} --delete-data removes them)")
        return 0
    ddb, s3 = aws.resource("dynamodb"), aws.resource("s3")
    ddb, s3 = aws.resource("dynamodb"), aws.resource("s3")
    for name in (out["ApiKeysTable"], out["UsageCountersTable"]):
        try:
            aws.client("dynamodb").update_table(TableName=name, DeletionProtectionEnabled=False)
            ddb.Table(name).delete()
            print(f"deleted table {name}")
        except ClientError as err:
            print(f"table {name}: {describe(err)}")
    for output in ("ArchiveBucket", "ReportsBucket", "AthenaResultsBucket", "AccessLogsBucket"):
        if output not in out:
            continue
        bucket = s3.Bucket(out[output])
        try:
            bucket.object_versions.delete()
            bucket.delete()
            print(f"deleted bucket {out[output]}")
        except ClientError as err:
            print(f"bucket {out[output]}: {describe(err)}")
    return 0


# Below this, the account's Lambda concurrency (a new account's may be 10) is shared so thinly by the
# authorizer, the backend and the transformer that a burst throttles the transformer, whose retries
# end in Firehose's error output.
LAMBDA_CONCURRENCY_FLOOR = 100
# What Lambda keeps unreserved whatever the functions reserve (a deploy that would go below fails).
LAMBDA_UNRESERVED_MINIMUM = 100


def concurrency_findings(limit: int | None, reserved: dict[str, int], region: str) -> tuple[list[str], list[str]]:
    """What Lambda's concurrency quota `limit` means for a stack reserving `reserved` (setting → amount):
    problems that would fail the deploy, and notes."""
    if limit is None:
        return [], []
    total = sum(reserved.values())
    if total and limit - total < LAMBDA_UNRESERVED_MINIMUM:
        settings = ", ".join(f"{name} {amount}" for name, amount in reserved.items() if amount)
        return [
            f"the environment reserves {total} of Lambda's concurrency ({settings}), but the quota in "
            f"{region} is {limit} and AWS keeps {LAMBDA_UNRESERVED_MINIMUM} unreserved (the deploy would fail): ask for at "
            f"least {total + LAMBDA_UNRESERVED_MINIMUM} (Service Quotas → AWS Lambda → Concurrent executions), or set "
            "those to 0 in infra/environments.json"
        ], []
    if limit < LAMBDA_CONCURRENCY_FLOOR:
        return [], [
            f"Lambda's concurrency quota in {region} is {limit}: the authorizer, the backend and the archive transformer "
            f"share it, and a throttled transformer sends usage to firehose-errors/. Ask for at least "
            f"{LAMBDA_CONCURRENCY_FLOOR} (Service Quotas → AWS Lambda → Concurrent executions)"
        ]
    return [], []


def preflight(args: argparse.Namespace) -> int:
    """What a first deploy would trip over, checked before anything changes; each problem says what to do."""
    known_environment(args.env)
    aws = session(args.region)
    settings = json.loads(ENVIRONMENTS.read_text())[args.env]
    region = aws.region_name
    problems, notes = [], []
    if not settings.get("existingApi"):
        # The example API logs its stage, which API Gateway refuses to create without the account's role.
        role = aws.client("apigateway").get_account().get("cloudwatchRoleArn")
        if not role:
            problems.append(
                f"API Gateway in {region} has no CloudWatch Logs role in its account settings, and the example API "
                "logs its stage (stage creation would fail: \"CloudWatch Logs role ARN must be set in account settings\"). "
                "Set it once per account and region: create a role API Gateway may assume with the managed policy "
                "AmazonAPIGatewayPushToCloudWatchLogs, then `aws apigateway update-account --patch-operations "
                f"op=replace,path=/cloudwatchRoleArn,value=ROLE_ARN --region {region}`; or point the environment at "
                "your own API (existingApi in infra/environments.json)"
            )
    try:
        limit = aws.client("lambda").get_account_settings()["AccountLimit"]["ConcurrentExecutions"]
    except (ClientError, BotoCoreError) as err:
        limit = None
        first_line = describe(err).splitlines()[0]
        notes.append(f"cannot read Lambda's concurrency quota in {region} ({first_line}): check it is at least "
                     f"{LAMBDA_CONCURRENCY_FLOOR} (Service Quotas → AWS Lambda → Concurrent executions)")
    # infra/lib/settings.ts: absent means none reserved.
    reserved = {name: int(settings.get(name) or 0) for name in ("transformerReservedConcurrency", "linksReservedConcurrency")}
    blocking, advice = concurrency_findings(limit, reserved, region)
    problems += blocking
    notes += advice
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    if problems:
        raise Failure("; and ".join(problems))
    print(f"preflight of meter-{args.env} in {region}: ready to deploy")
    return 0


def upload_pricing(args: argparse.Namespace) -> int:
    """Puts the environment's pricing file where the monthly report reads it."""
    aws = session(args.region)
    out = stack_outputs(aws, args.env)
    match = re.match(r"s3://([^/]+)/(.+)", out["PricingObject"])
    source = Path(args.file)
    if not source.is_file():
        raise Failure(f"the pricing file {source} does not exist (set pricingFile in infra/environments.json)")
    aws.client("s3").put_object(Bucket=match.group(1), Key=match.group(2), Body=source.read_bytes())
    print(f"pricing {source} → {out['PricingObject']}")
    return 0


def save_outputs(args: argparse.Namespace) -> int:
    aws = session(args.region)
    Path(args.file).write_text(json.dumps(stack_outputs(aws, args.env), indent=2))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("verify", help="check every resource the stack promises")
    check.add_argument("env")
    check.add_argument("--region")
    check.add_argument("--emulator", action="store_true", help="skip what the local emulator does not model")
    check.set_defaults(run=verify)
    usage = commands.add_parser("test-api-usage", help="call the example API and time counting and revocation")
    usage.add_argument("env")
    usage.add_argument("key")
    usage.add_argument("--region")
    usage.add_argument("--billable", type=int, default=3)
    usage.add_argument("--timeout", type=int, default=180, help="seconds to wait for exact counts")
    usage.set_defaults(run=test_api_usage)
    outputs = commands.add_parser("outputs", help="save the stack's outputs to a file")
    outputs.add_argument("env")
    outputs.add_argument("file")
    outputs.add_argument("--region")
    outputs.set_defaults(run=save_outputs)
    ready = commands.add_parser("preflight", help="check what a first deploy would trip over, before changing anything")
    ready.add_argument("env")
    ready.add_argument("--region")
    ready.set_defaults(run=preflight)
    pricing = commands.add_parser("upload-pricing", help="put the pricing file where the monthly report reads it")
    pricing.add_argument("env")
    pricing.add_argument("file")
    pricing.add_argument("--region")
    pricing.set_defaults(run=upload_pricing)
    teardown = commands.add_parser("destroy", help="delete the stack, and its data if told")
    teardown.add_argument("env")
    teardown.add_argument("--region")
    teardown.add_argument("--delete-data", action="store_true")
    teardown.set_defaults(run=destroy)
    args = parser.parse_args()
    try:
        return args.run(args)
    except Failure as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
