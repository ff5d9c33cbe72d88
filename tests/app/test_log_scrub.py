"""Log scrubbing: what libraries and exceptions carry is cleaned before any handler sees it."""

from __future__ import annotations

import logging

import pytest

from shared.app import log_scrub

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJhdWQiOiJodHRwczovL2FwaSJ9.c2lnbmF0dXJlLXZhbHVl"


@pytest.mark.parametrize(("text", "secret"), [
    ('"POST /workflows/1/triggers/manual/paths/invoke?sp=%2F&sig=AbC123xyz HTTP/1.1" 202', "AbC123xyz"),
    ("https://acct.blob.core.windows.net/c/b.json?se=2026&sp=r&sig=K3y%2Bz%3D&sv=2024", "K3y%2Bz%3D"),
    (f"Authorization: Bearer {JWT}", JWT),
    (f"token {JWT} here", JWT),
    ("secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw rotated", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
    ("client_secret=sandbox-secret&grant_type=client_credentials", "sandbox-secret"),
    ("DefaultEndpointsProtocol=https;AccountName=a;AccountKey=c2VjcmV0a2V5;EndpointSuffix=x", "c2VjcmV0a2V5"),
    ("{'X-IDENTITY-HEADER': 'e3b0c44298fc1c149afbf4c8'}", "e3b0c44298fc1c149afbf4c8"),
    ('{"access_token": "abc.def.ghi", "expires_on": "1"}', "abc.def.ghi"),
])
def test_secrets_are_removed_and_the_rest_is_kept(text, secret):
    cleaned = log_scrub.scrub(text)
    assert secret not in cleaned
    assert "***" in cleaned


def test_records_and_exception_texts_from_any_logger_are_scrubbed(caplog):
    log_scrub.install()
    logger = logging.getLogger("urllib3.connectionpool")
    with caplog.at_level(logging.DEBUG):
        logger.debug('"%s %s HTTP/1.1" %s', "POST", "/hook?sig=TopSecretSig", 202)
        try:
            raise ConnectionError("Max retries exceeded with url: /hook?sig=AnotherSecret")
        except ConnectionError:
            logger.exception("send failed")
    text = caplog.text
    assert "TopSecretSig" not in text and "AnotherSecret" not in text
    assert "sig=***" in text and "send failed" in text
