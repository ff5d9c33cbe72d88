"""Standard Webhooks signing (shared/core/webhook_signing.py), checked against the spec and the independent verifier."""

from __future__ import annotations

import base64
import json
import os
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from shared.core.webhook_signing import (
    parse_secret,
    sign,
    signature_header,
    signed_headers,
    webhook_id_for,
)

SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
SAFE_ID = re.compile(r"hunt_[A-Za-z0-9_-]{32}")
Tamper = Callable[[bytes, dict[str, str]], tuple[bytes, dict[str, str]]]


def new_secret(size: int = 32) -> str:
    return "whsec_" + base64.b64encode(os.urandom(size)).decode("ascii")


def body_of(job_id: str) -> bytes:
    return json.dumps({"id": job_id, "status": "succeeded", "rows": ["ünïcødé ✓"]}, ensure_ascii=False).encode()


def test_the_spec_test_vector_is_reproduced() -> None:
    assert sign(parse_secret(SPEC_SECRET), SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_signed_headers_pass_the_independent_verifier() -> None:
    secret = new_secret()
    body = body_of("job-1")
    headers = signed_headers([parse_secret(secret)], webhook_id_for("job-1"), int(time.time()), body)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert Webhook(secret).verify(body, headers) == {
        "id": "job-1",
        "status": "succeeded",
        "rows": ["ünïcødé ✓"],
    }


def test_during_a_rotation_each_secret_alone_verifies_the_delivery() -> None:
    old, new = new_secret(), new_secret(48)
    body = body_of("job-2")
    headers = signed_headers([parse_secret(new), parse_secret(old)], webhook_id_for("job-2"), int(time.time()), body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(body, headers)
    Webhook(new).verify(body, headers)
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(new_secret()).verify(body, headers)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda body, headers: (body.replace(b"succeeded", b"failed"), headers), id="body"),
        pytest.param(lambda body, headers: (body + b" ", headers), id="trailing space"),
        pytest.param(lambda body, headers: (body, {**headers, "webhook-id": webhook_id_for("another-job")}), id="id"),
        pytest.param(
            lambda body, headers: (body, {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) - 1)}),
            id="timestamp",
        ),
    ],
)
def test_a_tampered_delivery_fails_verification(tamper: Tamper) -> None:
    secret = new_secret()
    body = body_of("job-3")
    headers = signed_headers([parse_secret(secret)], webhook_id_for("job-3"), int(time.time()), body)
    Webhook(secret).verify(body, headers)  # the untouched delivery passes
    tampered_body, tampered_headers = tamper(body, headers)
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(secret).verify(tampered_body, tampered_headers)


@settings(max_examples=300, deadline=None)
@given(
    key=st.binary(min_size=24, max_size=64),
    job_id=st.text(max_size=80),
    timestamp=st.integers(min_value=0, max_value=2**33),
    body=st.text(max_size=200),
)
def test_every_signature_matches_the_independent_signer(key: bytes, job_id: str, timestamp: int, body: str) -> None:
    msg_id = webhook_id_for(job_id)
    expected = Webhook(key).sign(msg_id, datetime.fromtimestamp(timestamp, tz=UTC), body)
    assert sign(key, msg_id, timestamp, body.encode()) == expected


@pytest.mark.parametrize(
    "job_id",
    [
        "job-1",
        "incident.4711.run.2",
        "../../etc/passwd",
        "a b\tc\n",
        "ünïcødé-✓-🙂",
        "",
        "x" * 10_000,
        "hunt_" + "A" * 32,
    ],
)
def test_a_webhook_id_is_stable_safe_and_free_of_dots(job_id: str) -> None:
    webhook_id = webhook_id_for(job_id)
    assert webhook_id == webhook_id_for(job_id)
    assert SAFE_ID.fullmatch(webhook_id)
    assert "." not in webhook_id


@settings(max_examples=300, deadline=None)
@given(first=st.text(max_size=60), second=st.text(max_size=60))
def test_different_jobs_get_different_safe_webhook_ids(first: str, second: str) -> None:
    assert SAFE_ID.fullmatch(webhook_id_for(first))
    assert (webhook_id_for(first) == webhook_id_for(second)) == (first == second)


def test_a_secret_with_surrounding_whitespace_or_no_padding_is_accepted() -> None:
    key = os.urandom(32)  # 32 bytes: base64 ends in one "="
    encoded = base64.b64encode(key).decode("ascii")
    assert parse_secret(f"  whsec_{encoded}\n") == key
    assert parse_secret("whsec_" + encoded.rstrip("=")) == key


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("", "must start with 'whsec_'"),
        (base64.b64encode(b"k" * 32).decode(), "must start with 'whsec_'"),
        ("WHSEC_" + base64.b64encode(b"k" * 32).decode(), "must start with 'whsec_'"),
        ("whsk_" + base64.b64encode(b"k" * 32).decode(), "must start with 'whsec_'"),
        ("whsec_", "nothing after 'whsec_'"),
        ("whsec_   ", "nothing after 'whsec_'"),
        ("whsec_not*base64!secretvaluexyz", "not standard base64"),
        ("whsec_" + base64.urlsafe_b64encode(b"\xfb\xff" * 16).decode(), "not standard base64"),
        ("whsec_ab cd" + base64.b64encode(b"k" * 32).decode(), "not standard base64"),
        ("whsec_" + base64.b64encode(b"k" * 23).decode(), "decodes to 23 bytes"),
        ("whsec_" + base64.b64encode(b"k" * 65).decode(), "decodes to 65 bytes"),
        ("whsec_sécret", "not standard base64"),
    ],
)
def test_a_malformed_secret_is_refused_with_a_reason_that_does_not_echo_it(value: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=re.escape(complaint)) as refused:
        parse_secret(value)
    message = str(refused.value)
    secret_part = value.strip().removeprefix("whsec_").strip()
    assert not secret_part or secret_part not in message
    # the decoder's own error may quote the input: it is neither the cause nor shown as context
    assert refused.value.__cause__ is None
    assert refused.value.__context__ is None or refused.value.__suppress_context__


@pytest.mark.parametrize(
    ("secret", "msg_id", "timestamp", "complaint"),
    [
        (b"", "hunt_x", 1, "secret is empty"),
        (b"k" * 32, "msg.with.dots", 1, "must not contain '.'"),
        (b"k" * 32, "", 1, "must be non-empty"),
        (b"k" * 32, "hunt_x", -1, "non-negative"),
        (b"k" * 32, "hunt_x", True, "non-negative"),
    ],
)
def test_sign_refuses_what_would_make_an_ambiguous_signature(
    secret: bytes, msg_id: str, timestamp: int, complaint: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(complaint)):
        sign(secret, msg_id, timestamp, b"{}")


def test_a_destination_without_secrets_cannot_be_signed() -> None:
    with pytest.raises(ValueError, match="no webhook signing secret"):
        signature_header([], "hunt_x", 1, b"{}")


def test_signatures_are_listed_in_the_order_of_the_secrets() -> None:
    first, second = parse_secret(new_secret()), parse_secret(new_secret())
    header = signature_header([first, second], SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY)
    expected = [sign(key, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) for key in (first, second)]
    assert header.split(" ") == expected
