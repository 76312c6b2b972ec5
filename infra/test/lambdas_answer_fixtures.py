"""Each Lambda zip, run under cargo-lambda's runtime emulator, answers a real payload fixture.

The zips are the artifacts scripts/build-lambdas makes. Each `bootstrap` runs as Lambda would run it
(the Runtime API from `cargo lambda watch --only-lambda-apis`, the function's environment as the CDK
app sets it), talking to the local AWS emulator (AWS_ENDPOINT_URL) for DynamoDB, S3 and SNS; each
fixture is sent with `cargo lambda invoke`, and the answer is checked.

Usage: lambdas_answer_fixtures.py LAMBDA_DIR METER_BIN   (AWS_ENDPOINT_URL names the emulator)
Prints one line per fixture and a libtest-style summary; exits 1 on any failure.
"""

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
STORE = "dynamodb:keys=ApiKeys-fixtures,counters=UsageCounters-fixtures"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(command: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip()}")
    return done.stdout


def main() -> int:
    lambda_dir, meter = Path(sys.argv[1]), sys.argv[2]
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        print("AWS_ENDPOINT_URL must name the local AWS emulator", file=sys.stderr)
        return 2
    aws_env = {k: v for k, v in os.environ.items() if k.startswith("AWS_") or k in ("PATH", "HOME")}
    aws_env.setdefault("AWS_REGION", "us-east-1")
    work = Path(tempfile.mkdtemp(prefix="meter-fixtures-"))

    # What the stack would hold: tables, a key, buckets, the pricing file, topics.
    cli_env = dict(aws_env, METER_STORE=STORE, METER_HOME=str(work / "home"))
    run([meter, "store", "init"], cli_env)
    key = json.loads(run([meter, "keys", "create", "--email", "fixtures@example.com", "--json"], cli_env))
    session = boto3.session.Session(region_name=aws_env["AWS_REGION"])
    s3, sns, sqs, kms = (session.client(name) for name in ("s3", "sns", "sqs", "kms"))
    for bucket in ("meter-fixtures-archive", "meter-fixtures-reports"):
        s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket="meter-fixtures-reports", Key="pricing/pricing.toml",
                  Body=(ROOT / "reports" / "pricing.example.toml").read_bytes())
    finance = sns.create_topic(Name="meter-fixtures-finance")["TopicArn"]
    # Finance's inbox: the monthly report's message, whose signed links the report-links zip answers.
    inbox = sqs.create_queue(QueueName="meter-fixtures-finance-inbox")["QueueUrl"]
    inbox_arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=finance, Protocol="sqs", Endpoint=inbox_arn, Attributes={"RawMessageDelivery": "true"})
    links_key = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["Arn"]
    links_url = "https://abcdefghijklmnopqrstuvwxyz012345.lambda-url.us-east-1.on.aws/"
    alerts = sns.create_topic(Name="meter-fixtures-alerts")["TopicArn"]
    archive = "s3://meter-fixtures-archive/usage"

    functions = {
        "authorizer": {"METER_STORE": STORE, "METER_IDENTITY_HEADER": "x-api-key"},
        "cache-invalidator": {"METER_FLUSH_TARGETS": "rest:a1b2c3d4e5/api"},
        "archive-transformer": {"METER_STORE": STORE, "METER_ARCHIVE": archive},
        "reconcile-job": {"METER_STORE": STORE, "METER_ARCHIVE": archive, "METER_RECONCILE_LOOKBACK_DAYS": "3",
                          "METER_ALERT_TOPIC": alerts},
        "monthly-report": {"METER_STORE": STORE, "METER_ARCHIVE": archive,
                           "METER_REPORTS": "s3://meter-fixtures-reports/reports",
                           "METER_PRICING": "s3://meter-fixtures-reports/pricing/pricing.toml",
                           "METER_FINANCE_TOPIC": finance, "METER_LINKS_URL": links_url,
                           "METER_LINKS_KEY": links_key},
        "report-links": {"METER_REPORTS": "s3://meter-fixtures-reports/reports", "METER_LINKS_KEY": links_key},
        "example-backend": {},
    }

    def fixture(path: Path, **replace: str) -> Path:
        text = path.read_text()
        for placeholder, value in replace.items():
            text = text.replace("{" + placeholder + "}", value)
        out = work / path.name
        out.write_text(text)
        return out

    def records(answer, _):
        results = [r["result"] for r in answer["records"]]
        # The fixture: usage lines, a control message, a record that is not gzip, one more control
        # message, a truncated payload.
        assert results == ["Ok", "Dropped", "ProcessingFailed", "Dropped", "ProcessingFailed"], results
        ok = answer["records"][0]
        assert set(ok["metadata"]["partitionKeys"]) == {"year", "month", "day"}, ok["metadata"]
        return f"records {', '.join(results)}; partition {ok['metadata']['partitionKeys']}"

    def allowed(answer, _):
        statement = answer["policyDocument"]["Statement"][0]
        assert statement["Effect"] == "Allow", statement
        assert answer["context"]["keyId"] == key["id"], answer["context"]
        return f"Allow, context.keyId {answer['context']['keyId']}"

    def authorized(answer, _):
        assert answer["isAuthorized"] is True and answer["context"]["keyId"] == key["id"], answer
        return "isAuthorized, context.keyId"

    def ran(answer, _):
        assert answer["runId"] and answer["from"] <= answer["to"] == "2026-11-29", answer
        return f"run {answer['from']}..{answer['to']}, {answer['itemsChecked']} items checked"

    def backfilled(answer, _):
        assert (answer["from"], answer["to"]) == ("2026-10-31", "2026-10-31"), answer
        return "run 2026-10-31..2026-10-31"

    def issued(answer, _):
        # October 2026: one key, no usage; the invoices are issued to S3 and finance is told.
        listed = s3.list_objects_v2(Bucket="meter-fixtures-reports", Prefix="reports/")
        names = [o["Key"] for o in listed.get("Contents", [])]
        assert any("2026-10" in name for name in names), names
        return f"issued 2026-10 ({len(names)} files), totals {json.dumps(answer)[:80]}"

    inbox_messages = []

    def finance_link(name: str) -> str:
        # Received once: a received message stays hidden from the next receive for a while.
        if not inbox_messages:
            received = sqs.receive_message(QueueUrl=inbox, MaxNumberOfMessages=1, WaitTimeSeconds=1).get("Messages", [])
            assert received, "finance got no message"
            inbox_messages.append(json.loads(received[0]["Body"]))
        message = inbox_messages[0]
        assert message["links_outlive_credentials"] is True, message
        return next(f["url"] for f in message["files"] if f["name"] == name)

    def link_request(tamper: bool = False):
        """The function URL's event for the manifest's link in the finance message (made when run)."""
        def make() -> Path:
            link = finance_link("manifest.json")
            assert link.startswith(links_url), link
            path, query = link[len(links_url):].split("?")
            params = dict(pair.split("=") for pair in query.split("&"))
            signature = params["signature"][::-1] if tamper else params["signature"]
            return fixture(FIXTURES / "function-url-link.json", PATH=path, EXPIRES=params["expires"], SIGNATURE=signature)
        return make

    link_answers = {}

    def redirected(answer, _):
        assert answer["statusCode"] == 302, answer
        location = answer["headers"]["location"]
        assert "manifest.json" in location and "X-Amz-Signature=" in location, location
        link_answers["redirect"] = location
        return "302 to a presigned link signed now"

    def refused(answer, _):
        assert answer["statusCode"] == 403 and "location" not in answer["headers"], answer
        return f"403: {answer['body']}"

    def responded(answer, output):
        assert answer["statusCode"] == 200, answer
        line = json.loads(next(l for l in output.splitlines() if '"API_USAGE"' in l))
        assert line["keyId"] == "0123456789ab" and line["shouldCount"] is True, line
        return "200 and one usage line on stdout"

    def flush_refused(error, _):
        # The emulator does not implement FlushStageAuthorizersCache: the function must report that as
        # a typed failure (so SNS redelivers), naming the stage.
        assert error["errorType"] in ("Meter.Retryable", "Meter.Permanent"), error
        assert "a1b2c3d4e5" in error["errorMessage"], error
        return f"{error['errorType']} for the stage the emulator cannot flush"

    cases = [
        ("authorizer", fixture(ROOT / "authorizer/tests/fixtures/rest-request.json", KEY=key["key"]), allowed, True),
        ("authorizer", fixture(ROOT / "authorizer/tests/fixtures/http-v2.json", KEY=key["key"]), authorized, True),
        ("cache-invalidator", FIXTURES / "sns-revocation.json", flush_refused, False),
        ("archive-transformer", ROOT / "realtime/tests/fixtures/firehose-event.json", records, True),
        ("reconcile-job", FIXTURES / "scheduled-reconcile.json", ran, True),
        # A month is issued only once its last day is reconciled: a backfill of that day first.
        ("reconcile-job", FIXTURES / "backfill-reconcile.json", backfilled, True),
        ("monthly-report", FIXTURES / "scheduled-report.json", issued, True),
        ("report-links", link_request(), redirected, True),
        ("report-links", link_request(tamper=True), refused, True),
        ("example-backend", ROOT / "example-api/tests/fixtures/rest-proxy-event.json", responded, True),
    ]

    port = free_port()
    processes = []
    logs = {}
    running = {}
    passed = failed = 0
    try:
        watch = subprocess.Popen(["cargo", "lambda", "watch", "--only-lambda-apis", "-A", "127.0.0.1", "-P", str(port)],
                                 cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes.append(watch)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or watch.poll() is not None:
                    raise RuntimeError("cargo lambda watch did not start")
                time.sleep(0.2)
        for name, environment in functions.items():
            zip_path = lambda_dir / name / "bootstrap.zip"
            with zipfile.ZipFile(zip_path) as archive_zip:
                archive_zip.extractall(work / name)
            binary = work / name / "bootstrap"
            binary.chmod(0o755)
            logs[name] = open(work / f"{name}.log", "w+")
            env = dict(aws_env, **environment, AWS_LAMBDA_FUNCTION_NAME=name, AWS_LAMBDA_FUNCTION_VERSION="1",
                       AWS_LAMBDA_FUNCTION_MEMORY_SIZE="512", AWS_LAMBDA_RUNTIME_API=f"http://127.0.0.1:{port}/.rt/{name}")
            running[name] = subprocess.Popen([str(binary)], env=env, stdout=logs[name], stderr=subprocess.STDOUT)
            processes.append(running[name])
        for name, event, check, succeeds in cases:
            if callable(event):
                try:
                    event = event()
                except (AssertionError, KeyError, StopIteration) as err:
                    failed += 1
                    print(f"FAIL  {name}: its event could not be made: {err}", flush=True)
                    continue
            logs[name].seek(0, os.SEEK_END)
            start = logs[name].tell()
            if running[name].poll() is not None:
                failed += 1
                logs[name].seek(0)
                print(f"FAIL  {name} answers {event.name}: the function exited ({running[name].returncode})\n{indent(logs[name].read())}")
                continue
            done = subprocess.run(["cargo", "lambda", "invoke", name, "-A", "127.0.0.1", "-P", str(port),
                                   "--data-file", str(event), "--output-format", "json"],
                                  capture_output=True, text=True, cwd=ROOT, timeout=60)
            time.sleep(0.2)
            logs[name].seek(start)
            output = logs[name].read()
            what = f"{name} answers {event.name}"
            try:
                assert running[name].poll() is None, f"the function exited with {running[name].returncode}"
                if succeeds:
                    assert done.returncode == 0, f"invocation failed: {done.stderr.strip() or done.stdout.strip()}"
                    detail = check(json.loads(done.stdout), output)
                else:
                    assert done.returncode != 0, f"expected a failure, got {done.stdout.strip()}"
                    error = extract_error(done.stderr + done.stdout)
                    detail = check(error, output)
                passed += 1
                print(f"ok    {what}: {detail}", flush=True)
            except (AssertionError, KeyError, ValueError, StopIteration) as err:
                failed += 1
                print(f"FAIL  {what}: {err}\n      its log:\n{indent(output)}", flush=True)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
    status = "ok" if failed == 0 else "FAILED"
    print(f"test result: {status}. {passed} passed; {failed} failed; 0 ignored (Lambda zips under the runtime emulator)")
    return 0 if failed == 0 else 1


def extract_error(text: str) -> dict:
    """The error type and message `cargo lambda invoke` reports for a failed invocation
    (`Error: <errorType>` then the message, framed)."""
    match = re.search(r"Error: (\S+)\s*(.*)", text, re.S)
    if not match:
        raise ValueError(f"no error in {text!r}")
    message = " ".join(line.strip(" ×│╰─▶├") for line in match.group(2).splitlines())
    return {"errorType": match.group(1), "errorMessage": message}


def indent(text: str) -> str:
    return "\n".join(f"        {line}" for line in text.strip().splitlines()[-20:])


if __name__ == "__main__":
    sys.exit(main())
