#!/usr/bin/env python3
"""ivs-local against the official AWS SDK for Python (boto3's `ivs-realtime` client).

Usage (ivs-local must be running; the Makefile starts it):
    python3 ivs-local/tests/aws_sdk_test.py --endpoint http://127.0.0.1:8790

Every check calls ivs-local through boto3 with an endpoint override, exactly as an application
would call IVS: the SDK signs with SigV4 (service `ivs`), serializes the REST-JSON bodies and
parses the responses and errors with AWS's own service model. Prints one line per check and
ends with "N passed, M failed"; exits non-zero if any check failed.
"""
import argparse
import concurrent.futures
import datetime
import json
import os
import re
import sys
import traceback
import urllib.request

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

HERE = os.path.dirname(os.path.abspath(__file__))
PUBLIC_KEY_PEM = os.path.join(HERE, "..", "..", "core", "tests", "token-fixtures", "openssl-sec1.pub.pem")
STAGE_ARN = re.compile(r"^arn:aws:ivs:[a-z0-9-]+:[0-9]{12}:stage/[a-zA-Z0-9]{12}$")
KEY_ARN = re.compile(r"^arn:aws:ivs:[a-z0-9-]+:[0-9]{12}:public-key/[a-zA-Z0-9]{12}$")


def client(args, secret=None):
    return boto3.client(
        "ivs-realtime",
        endpoint_url=args.endpoint,
        region_name=args.region,
        aws_access_key_id=args.access_key,
        aws_secret_access_key=secret or args.secret_key,
        # Retries stay on (the SDK's normal behaviour against IVS's rate limits).
        config=Config(retries={"mode": "standard", "max_attempts": 5}),
    )


def expect_error(fn, code, status):
    try:
        fn()
    except ClientError as e:
        got_code = e.response["Error"]["Code"]
        got_status = e.response["ResponseMetadata"]["HTTPStatusCode"]
        assert (got_code, got_status) == (code, status), f"got {got_code} {got_status}: {e}"
        assert e.response["Error"].get("Message"), "error without message"
        return e
    raise AssertionError(f"expected {code}, the call succeeded")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--endpoint", required=True, help="ivs-local's URL, e.g. http://127.0.0.1:8790")
    ap.add_argument("--region", default=os.environ.get("IVS_LOCAL_REGION", "us-east-1"))
    ap.add_argument("--access-key", default=os.environ.get("AWS_ACCESS_KEY_ID", "AKIDLOCALSTAGEFAN"))
    ap.add_argument("--secret-key", default=os.environ.get("AWS_SECRET_ACCESS_KEY", "stagefan-local-secret"))
    args = ap.parse_args()
    ivs = client(args)
    ctx = {}
    checks = []

    def check(fn):
        checks.append(fn)
        return fn

    @check
    def create_stage_with_tags_and_a_token():
        r = ivs.create_stage(
            name="boto3-stage",
            tags={"stagefan:broadcast": "sdk", "stagefan:managed": "true"},
            participantTokenConfigurations=[
                {"userId": "host", "capabilities": ["PUBLISH", "SUBSCRIBE"], "duration": 60}
            ],
        )
        stage = r["stage"]
        assert STAGE_ARN.match(stage["arn"]), stage["arn"]
        assert stage["name"] == "boto3-stage"
        assert stage["endpoints"]["whip"].endswith("/whip"), stage["endpoints"]
        assert stage["endpoints"]["events"].startswith("ws://"), stage["endpoints"]
        assert stage["tags"] == {"stagefan:broadcast": "sdk", "stagefan:managed": "true"}
        (tok,) = r["participantTokens"]
        assert tok["userId"] == "host" and tok["duration"] == 60
        assert sorted(tok["capabilities"]) == ["PUBLISH", "SUBSCRIBE"]
        assert isinstance(tok["expirationTime"], datetime.datetime), tok["expirationTime"]
        assert tok["token"].count(".") == 2 and len(tok["participantId"]) == 12
        ctx["arn"] = stage["arn"]

    @check
    def get_update_and_list_stages():
        assert ivs.get_stage(arn=ctx["arn"])["stage"]["arn"] == ctx["arn"]
        r = ivs.update_stage(arn=ctx["arn"], name="boto3-renamed")
        assert r["stage"]["name"] == "boto3-renamed"
        ctx["second"] = ivs.create_stage(name="boto3-second")["stage"]["arn"]
        arns, token = [], None
        while True:  # page by hand, one stage per page, with nextToken
            page = ivs.list_stages(maxResults=1, **({"nextToken": token} if token else {}))
            assert len(page["stages"]) <= 1
            arns += [s["arn"] for s in page["stages"]]
            token = page.get("nextToken")
            if not token:
                break
        assert ctx["second"] in arns, arns
        assert ctx["arn"] in arns, arns
        assert len(arns) == len(set(arns)), "pagination repeated a stage"

    @check
    def create_participant_token():
        r = ivs.create_participant_token(
            stageArn=ctx["arn"], userId="viewer-1", capabilities=["SUBSCRIBE"], duration=5,
            attributes={"role": "viewer"},
        )["participantToken"]
        assert r["capabilities"] == ["SUBSCRIBE"] and r["userId"] == "viewer-1"
        assert r["attributes"] == {"role": "viewer"}
        left = r["expirationTime"] - datetime.datetime.now(datetime.timezone.utc)
        assert datetime.timedelta(minutes=4) < left <= datetime.timedelta(minutes=5, seconds=5), left

    @check
    def tags():
        ivs.tag_resource(resourceArn=ctx["arn"], tags={"extra": "1", "other key": "x y"})
        tags = ivs.list_tags_for_resource(resourceArn=ctx["arn"])["tags"]
        want = {"stagefan:broadcast": "sdk", "stagefan:managed": "true", "extra": "1", "other key": "x y"}
        assert tags == want, tags
        ivs.untag_resource(resourceArn=ctx["arn"], tagKeys=["extra", "other key"])
        assert ivs.list_tags_for_resource(resourceArn=ctx["arn"])["tags"] == {
            "stagefan:broadcast": "sdk", "stagefan:managed": "true"}

    @check
    def public_keys():
        pem = open(PUBLIC_KEY_PEM).read()
        r = ivs.import_public_key(publicKeyMaterial=pem, name="boto3-key", tags={"k": "v"})["publicKey"]
        assert KEY_ARN.match(r["arn"]), r["arn"]
        assert r["fingerprint"] and r["publicKeyMaterial"].strip() == pem.strip()
        assert ivs.get_public_key(arn=r["arn"])["publicKey"]["name"] == "boto3-key"
        assert r["arn"] in [k["arn"] for k in ivs.list_public_keys()["publicKeys"]]
        expect_error(lambda: ivs.import_public_key(publicKeyMaterial=pem), "ConflictException", 409)
        not_p384 = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
        expect_error(lambda: ivs.import_public_key(publicKeyMaterial=not_p384), "ValidationException", 400)
        ivs.delete_public_key(arn=r["arn"])
        expect_error(lambda: ivs.get_public_key(arn=r["arn"]), "ResourceNotFoundException", 404)

    @check
    def participants_of_an_idle_stage():
        assert ivs.get_stage(arn=ctx["arn"])["stage"].get("activeSessionId") is None
        r = ivs.list_participants(stageArn=ctx["arn"], sessionId="st-AAAAAAAAAAAAA")
        assert r["participants"] == []
        expect_error(lambda: ivs.get_participant(stageArn=ctx["arn"], sessionId="st-AAAAAAAAAAAAA",
                                                 participantId="nobody"),
                     "ResourceNotFoundException", 404)
        expect_error(lambda: ivs.disconnect_participant(stageArn=ctx["arn"], participantId="nobody"),
                     "ResourceNotFoundException", 404)

    @check
    def replication_needs_a_publishing_participant():
        other = ivs.create_stage(name="boto3-dest")["stage"]["arn"]
        ctx["other"] = other
        expect_error(lambda: ivs.start_participant_replication(sourceStageArn=ctx["arn"], destinationStageArn=other,
                                                               participantId="nobody"),
                     "ResourceNotFoundException", 404)
        assert ivs.list_participant_replicas(sourceStageArn=ctx["arn"], participantId="nobody")["replicas"] == []

    @check
    def errors_have_aws_codes():
        e = expect_error(lambda: ivs.get_stage(arn="arn:aws:ivs:us-east-1:123456789012:stage/DoesNotExist"),
                         "ResourceNotFoundException", 404)
        assert e.response["ResponseMetadata"]["RequestId"], "no request id"
        expect_error(lambda: ivs.create_stage(name="bad name!"), "ValidationException", 400)
        expect_error(lambda: client(args, secret="wrong-secret").list_stages(), "InvalidSignatureException", 403)

    @check
    def delete_stages():
        for arn in (ctx["arn"], ctx["other"], ctx["second"]):
            ivs.delete_stage(arn=arn)
            expect_error(lambda: ivs.get_stage(arn=arn), "ResourceNotFoundException", 404)

    @check
    def throttling_is_a_retryable_sdk_error():
        stats = json.load(urllib.request.urlopen(f"{args.endpoint}/_local/stats"))
        if not stats.get("rateScale"):
            # A local run may turn throttling off; CI must not pass this check without it.
            if os.environ.get("CI") == "true":
                raise AssertionError("CI=true and throttling is off in this ivs-local "
                                     "(--rate-scale 0 / IVS_LOCAL_RATE_SCALE=0): nothing to check")
            print("     (throttling is off in this ivs-local: --rate-scale 0)")
            return
        once = boto3.client(
            "ivs-realtime", endpoint_url=args.endpoint, region_name=args.region,
            aws_access_key_id=args.access_key, aws_secret_access_key=args.secret_key,
            config=Config(retries={"mode": "standard", "max_attempts": 1}),
        )
        limit = stats["operations"]["ListPublicKeys"]["limitPerSecond"]

        def one(_):
            try:
                once.list_public_keys()
                return 200
            except ClientError as e:
                assert e.response["Error"]["Code"] == "ThrottlingException", e
                assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 429
                return 429

        # Sent together from 12 threads, so they arrive faster than the budget.
        with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
            codes = list(pool.map(one, range(int(limit * 6))))
        seen = json.load(urllib.request.urlopen(f"{args.endpoint}/_local/stats"))["operations"]["ListPublicKeys"]
        # A token bucket of one second's burst lets at most 2 × limit through in any second:
        # when more than that arrived within a second, some must have been throttled.
        if seen["maxRequestsPerSecond"] > 2 * limit:
            assert 429 in codes, (codes, seen)
        else:
            print(f"     (machine too slow to send > {2 * limit:.0f} requests in a second; saw {seen})")
        # With its retries on, the SDK gets through (backoff until the bucket refills).
        ivs.list_public_keys()

    passed = failed = 0
    for fn in checks:
        try:
            fn()
            print(f"ok   {fn.__name__}")
            passed += 1
        except Exception:  # noqa: BLE001 - report every failure, then go on
            print(f"FAIL {fn.__name__}")
            traceback.print_exc()
            failed += 1
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
