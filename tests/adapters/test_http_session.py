"""The pooled session reads the environment once, unless a proxy is configured (then requests reads it per call)."""

from __future__ import annotations

import http.server
import threading
import time
import uuid
from collections.abc import Iterator
from typing import ClassVar

import pytest

from shared.adapters.http_session import DirectSession, pooled_session

PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


@pytest.fixture
def no_proxy_environment(monkeypatch):
    for name in (*PROXY_VARIABLES, "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_without_a_proxy_the_environment_is_read_once_and_the_ca_bundle_still_applies(no_proxy_environment):
    no_proxy_environment.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/bundle.pem")
    session = pooled_session()
    assert session.trust_env is False and session.verify == "/etc/ssl/bundle.pem"


def test_without_a_proxy_or_a_bundle_certificates_are_verified_against_the_default_store(no_proxy_environment):
    session = pooled_session()
    assert session.trust_env is False and session.verify is True


def test_with_a_proxy_configured_requests_keeps_reading_the_environment_per_request(no_proxy_environment):
    no_proxy_environment.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    session = pooled_session()
    assert session.trust_env is True
    assert session.merge_environment_settings("https://api.security.microsoft.com/x", {}, None, None, None)[
        "proxies"]["https"] == "http://proxy.example:3128"


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, str, dict[str, str], bytes]]] = []

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        _Recorder.seen.append((self.command, self.path, dict(self.headers), body))
        self.send_response(201)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_PUT = do_GET = _answer

    def do_POST(self) -> None:   # a hunting API that takes its time: 0.2 s before the head
        time.sleep(0.2)
        self._answer()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[str]:
    _Recorder.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_the_storage_session_sends_exactly_what_the_sdk_gives_it(no_proxy_environment, recorder):
    session = pooled_session()
    assert isinstance(session, DirectSession) and session.trust_env is False
    session.cookies.set("stray", "cookie")   # the session's cookie jar never joins a call (its headers do)
    response = session.request("PUT", f"{recorder}/c/blob?comp=block", headers={"x-ms-version": "2025-01-05"},
                               data=b"body", timeout=(5, 5), allow_redirects=False, stream=False, verify=True)
    assert (response.status_code, response.content) == (201, b"ok")
    [(method, path, headers, body)] = _Recorder.seen
    assert (method, path, body) == ("PUT", "/c/blob?comp=block", b"body")
    assert headers["x-ms-version"] == "2025-01-05" and headers["Content-Length"] == "4"
    assert "Cookie" not in headers and headers["Connection"] == "keep-alive"


def test_the_hunting_api_s_call_goes_the_direct_way_and_says_how_long_the_answer_s_head_took(
        no_proxy_environment, recorder):
    """The hunting client's post (bytes, streamed, no redirects) skips requests' preparation like the SDKs' calls,
    and still carries `elapsed`, from which the quota gate meters a Graph call's running time."""
    session = pooled_session()
    sent = {"prepared": 0}
    prepare = session._prepare
    session._prepare = lambda *args: (sent.__setitem__("prepared", sent["prepared"] + 1), prepare(*args))[1]
    response = session.post(f"{recorder}/api/advancedqueries/run", data=b'{"Query":"x"}', stream=True,
                            allow_redirects=False, timeout=(5, 5),
                            headers={"Authorization": "Bearer t", "Content-Type": "application/json"})
    assert response.status_code == 201 and response.content == b"ok"
    assert sent["prepared"] == 0 and response.elapsed.total_seconds() >= 0.2
    [(method, path, headers, body)] = _Recorder.seen
    assert (method, path, body, headers["Authorization"]) == ("POST", "/api/advancedqueries/run", b'{"Query":"x"}',
                                                              "Bearer t")


def test_the_storage_session_carries_the_azure_sdks_over_azurite(no_proxy_environment, azurite):
    """Each SDK the relay uses, over the direct session: a table's conditional write, a queue's messages, a blob's
    create-only upload and download."""
    from azure.core import MatchConditions
    from azure.core.exceptions import ResourceExistsError, ResourceModifiedError
    from azure.data.tables import TableServiceClient, UpdateMode
    from azure.storage.blob import BlobServiceClient
    from azure.storage.queue import QueueServiceClient

    shared = {"session": pooled_session(), "session_owner": False}
    name = "direct" + uuid.uuid4().hex[:10]
    table = TableServiceClient.from_connection_string(azurite.connection_string, **shared).create_table(name)
    written = table.create_entity({"PartitionKey": "p", "RowKey": "r", "n": 1})
    table.update_entity({"PartitionKey": "p", "RowKey": "r", "n": 2}, mode=UpdateMode.REPLACE,
                        etag=written["etag"], match_condition=MatchConditions.IfNotModified)
    with pytest.raises(ResourceModifiedError):
        table.update_entity({"PartitionKey": "p", "RowKey": "r", "n": 3}, mode=UpdateMode.REPLACE,
                            etag=written["etag"], match_condition=MatchConditions.IfNotModified)
    assert table.get_entity("p", "r")["n"] == 2

    queue = QueueServiceClient.from_connection_string(azurite.connection_string, **shared).create_queue(name)
    queue.send_message("hello")
    [message] = list(queue.receive_messages(max_messages=5))
    queue.delete_message(message)
    assert message.content == "hello" and list(queue.receive_messages()) == []

    container = BlobServiceClient.from_connection_string(azurite.connection_string, **shared).create_container(name)
    container.upload_blob("b.json", b'{"a": 1}')
    with pytest.raises(ResourceExistsError):
        container.upload_blob("b.json", b"again")
    assert container.download_blob("b.json").readall() == b'{"a": 1}'


def test_with_a_proxy_configured_the_storage_session_is_requests_own(no_proxy_environment):
    no_proxy_environment.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    session = pooled_session()
    assert not isinstance(session, DirectSession) and session.trust_env is True


def test_a_pooled_connection_the_server_reset_is_sent_again_once_on_a_fresh_one(no_proxy_environment):
    """The first connection answers once, then is reset under the next request (a server that closed an idle
    keep-alive connection); the session sends that request again on a new connection."""
    import socket
    import struct

    answer = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    requests_seen: list[int] = []

    def serve() -> None:
        first, _ = server.accept()
        first.recv(65536)
        requests_seen.append(1)
        first.sendall(answer)
        first.recv(65536)                 # the second request, on the kept connection: reset it
        first.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        first.close()
        second, _ = server.accept()
        second.recv(65536)
        requests_seen.append(2)
        second.sendall(answer)
        second.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    session = pooled_session()
    url = f"http://127.0.0.1:{port}/t"
    assert session.request("PUT", url, data=b"a", allow_redirects=False, timeout=5).status_code == 201
    assert session.request("PUT", url, data=b"b", allow_redirects=False, timeout=5).status_code == 201
    thread.join(5)
    server.close()
    assert requests_seen == [1, 2]


@pytest.fixture
def tls_recorder() -> Iterator[tuple[str, str]]:
    """The recorder over https, with a self-signed certificate: its URL and the PEM that trusts it."""
    from sandbox.tls import make_self_signed

    material = make_self_signed()
    _Recorder.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.socket = material.server_context().wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}", str(material.cert_path)
    server.shutdown()


def test_over_https_the_storage_session_verifies_the_certificate_against_the_bundle_it_is_given(
        no_proxy_environment, tls_recorder):
    import requests

    url, bundle = tls_recorder
    session = pooled_session()
    with pytest.raises(requests.exceptions.SSLError):   # the default store does not trust a self-signed certificate
        session.request("PUT", f"{url}/c/b", data=b"x", allow_redirects=False, timeout=5, verify=True)
    response = session.request("PUT", f"{url}/c/b", data=b"x", allow_redirects=False, timeout=5, verify=bundle)
    assert response.status_code == 201 and [seen[:2] for seen in _Recorder.seen] == [("PUT", "/c/b")]


def test_a_body_that_is_a_stream_is_prepared_by_requests_and_sent_whole(no_proxy_environment, recorder):
    import io

    session = pooled_session()
    response = session.request("PUT", f"{recorder}/c/streamed", data=io.BytesIO(b"streamed body"),
                               headers={"x-ms-version": "2025-01-05"}, allow_redirects=False, timeout=5)
    assert response.status_code == 201
    [(method, path, headers, body)] = _Recorder.seen
    assert (method, path, body, headers["Content-Length"]) == ("PUT", "/c/streamed", b"streamed body", "13")


def test_text_bodies_are_sent_as_utf8_with_their_length_and_a_bodyless_put_says_zero(no_proxy_environment,
                                                                                       recorder):
    session = pooled_session()
    # The method in lower case: upper-cased, as requests does (the recorder answers PUT only).
    session.request("put", f"{recorder}/t", data='{"name": "Zoë"}', allow_redirects=False, timeout=5)
    session.request("PUT", f"{recorder}/empty", allow_redirects=False, timeout=5)
    session.request("GET", f"{recorder}/read", allow_redirects=False, timeout=5)
    [text, empty, read] = _Recorder.seen
    assert text[3] == '{"name": "Zoë"}'.encode() and text[2]["Content-Length"] == str(len(text[3]))
    assert empty[2]["Content-Length"] == "0" and "Content-Length" not in read[2]


def test_connection_failures_and_timeouts_are_raised_as_requests_errors(no_proxy_environment):
    """The SDKs' transport maps requests' errors to azure-core's (ServiceRequestError, ServiceResponseError):
    the direct path raises the same ones requests' adapter would."""
    import socket

    import requests

    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    session = pooled_session()
    with pytest.raises(requests.ConnectionError):
        session.request("GET", f"http://127.0.0.1:{port}/x", allow_redirects=False, timeout=2)

    silent = socket.create_server(("127.0.0.1", 0))   # accepts, and never answers
    try:
        with pytest.raises(requests.ReadTimeout):
            session.request("GET", f"http://127.0.0.1:{silent.getsockname()[1]}/x", allow_redirects=False,
                            timeout=(2, 0.2))
    finally:
        silent.close()


def test_a_host_s_connection_pool_is_looked_up_once_and_the_kept_pools_stay_bounded(no_proxy_environment,
                                                                                      recorder):
    from shared.adapters.http_session import HOST_POOLS

    session = pooled_session()
    adapter = session.get_adapter(recorder)
    lookups: list[str] = []
    original = adapter.get_connection_with_tls_context

    def counted(request, verify, proxies=None, cert=None):  # type: ignore[no-untyped-def]
        lookups.append(request.url)
        return original(request, verify, proxies=proxies, cert=cert)

    adapter.get_connection_with_tls_context = counted  # type: ignore[method-assign]
    for n in range(3):
        assert session.request("GET", f"{recorder}/{n}", allow_redirects=False, timeout=5).status_code == 201
    assert len(lookups) == 1
    everywhere = http.server.ThreadingHTTPServer(("0.0.0.0", 0), _Recorder)   # reachable as 127.0.0.2, .3...
    threading.Thread(target=everywhere.serve_forever, daemon=True).start()
    try:
        for n in range(HOST_POOLS + 2):   # more hosts than the adapter keeps: the session's kept pools stay bounded
            url = f"http://127.0.0.{n + 2}:{everywhere.server_address[1]}/n{n}"
            assert session.request("GET", url, allow_redirects=False, timeout=5).status_code == 201
            assert len(session._pools) <= HOST_POOLS
    finally:
        everywhere.shutdown()
