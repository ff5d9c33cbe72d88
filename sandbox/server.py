"""The sandbox: Microsoft's side of Hunt Relay on two loopback ports, in-process or as `python -m sandbox`.

    http  (api_url)    the hunting endpoints (sandbox.hunting_api), the managed-identity endpoint /msi/token
                       (sandbox.identity), the admin path /_sandbox/ (sandbox.admin), /v1.0/servicePrincipals*
                       handed to `sandbox.graph_directory.handle` when that module exists, and Graph's
                       POST /v1.0/applications(appId='..')/federatedIdentityCredentials
    https (authority)  the token authority (sandbox.authority), self-signed certificate at `ca_path`; the
                       hunting endpoints too (api_tls_url), as the real APIs are https only: a benchmark that
                       opens a connection per hunt pays the handshake there, as it would in Azure

Usage:
    sb = Sandbox(rows=20_000).start()
    sb.knobs.quota.calls_per_window = 2        # knobs: sandbox.knobs
    sb.counters.calls_to("mde", 429)           # counters: sandbox.counters
    sb.reset(); sb.stop()
"""

from __future__ import annotations

import copy
import importlib
import json
import logging
import re
import shutil
import ssl
import threading
import uuid
from typing import Any

from sandbox import admin, authority, identity
from sandbox.counters import Counters
from sandbox.faults import FaultPlan
from sandbox.http_base import Reply, ReplyingHandler, Request, SandboxHTTPServer, json_reply
from sandbox.hunting import Api, HuntingEngine
from sandbox.hunting_api import error_reply, hunting_call
from sandbox.identity import Directory
from sandbox.knobs import Knobs, QuotaKnobs
from sandbox.quota import QuotaBook
from sandbox.tls import TlsMaterial, make_self_signed
from sandbox.tokens import TokenError, TokenIssuer

logger = logging.getLogger(__name__)

HUNTING_PATHS: dict[str, Api] = {
    "/api/advancedqueries/run": "mde",
    "/api/advancedhunting/run": "m365d",
    "/v1.0/security/runHuntingQuery": "graph",
    # The Graph SDK calls the action by its namespaced name; Graph takes both.
    "/v1.0/security/microsoft.graph.security.runHuntingQuery": "graph",
}
DIRECTORY_PREFIX = "/v1.0/servicePrincipals"
_FEDERATED_PATH = re.compile(r"/v1\.0/applications\(appId='([^']+)'\)/federatedIdentityCredentials")
_OPENID = re.compile(r"^/([^/]+)/v2\.0/\.well-known/openid-configuration$")
_TOKEN = re.compile(r"^/([^/]+)/oauth2/v2\.0/token$")
_TOKEN_V1 = re.compile(r"^/([^/]+)/oauth2/token$")   # the v1 endpoint (resource=), as Microsoft's samples use
_KEYS = re.compile(r"^/([^/]+)/discovery/v2\.0/keys$")


class _TlsHandler(ReplyingHandler):
    def setup(self) -> None:
        super().setup()
        # The handshake runs here, in the connection's own thread, not in the accept loop.
        assert isinstance(self.connection, ssl.SSLSocket)
        self.connection.settimeout(30)
        self.connection.do_handshake()
        self.connection.settimeout(None)


class Sandbox:
    """Both servers, their shared state, and the knobs and counters tests use."""

    def __init__(self, rows: int = 20_000, seed: int = 7, calls_per_window: int = 45,
                 window_seconds: float = 60.0, port: int = 0, tls_port: int = 0,
                 engine: HuntingEngine | None = None, max_result_mb: float = 50.0) -> None:
        self.rows, self.seed = rows, seed
        self._requested_ports = (port, tls_port)
        self._default_knobs = Knobs(max_result_mb=max_result_mb,
                                    quota=QuotaKnobs(calls_per_window=calls_per_window,
                                                     window_seconds=float(window_seconds)))
        self.knobs = copy.deepcopy(self._default_knobs)
        self.knob_lock = threading.Lock()
        self.counters = Counters()
        self.quota = QuotaBook()
        self.fault_plan = FaultPlan(seed)
        self.directory = Directory()
        self.issuer = TokenIssuer()
        self.stop_event = threading.Event()
        self._engine = engine
        self._tenant_engines: dict[str, HuntingEngine] = {}   # customer tenants' own data (add_tenant)
        self._tenant_engines_lock = threading.Lock()
        self._tls: TlsMaterial | None = None
        self._servers: list[SandboxHTTPServer] = []
        self._threads: list[threading.Thread] = []

    # --- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> Sandbox:
        if self._engine is None:
            self._engine = HuntingEngine(rows=self.rows, seed=self.seed)
        self._tls = make_self_signed()
        http = SandboxHTTPServer(("127.0.0.1", self._requested_ports[0]), ReplyingHandler, self._route_http,
                                 on_connection=self.counters.count_connection, stop_event=self.stop_event)
        https = SandboxHTTPServer(("127.0.0.1", self._requested_ports[1]), _TlsHandler, self._route_tls,
                                  stop_event=self.stop_event)
        https.socket = self._tls.server_context().wrap_socket(
            https.socket, server_side=True, do_handshake_on_connect=False)
        self._servers = [http, https]
        for server, name in ((http, "sandbox-http"), (https, "sandbox-https")):
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                      name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        logger.info("sandbox listening: api %s authority %s", self.api_url, self.authority)
        return self

    def stop(self) -> None:
        self.stop_event.set()
        with self._tenant_engines_lock:
            for engine in self._tenant_engines.values():
                engine.close()
            self._tenant_engines.clear()
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers, self._threads = [], []
        if self._tls is not None:
            shutil.rmtree(self._tls.directory, ignore_errors=True)
            self._tls = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what tests use --------------------------------------------------------------------------------------

    @property
    def engine(self) -> HuntingEngine:
        if self._engine is None:
            raise RuntimeError("the sandbox has not been started")
        return self._engine

    @property
    def port(self) -> int:
        return int(self._servers[0].server_address[1])

    @property
    def tls_port(self) -> int:
        return int(self._servers[1].server_address[1])

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_tls_url(self) -> str:
        """The hunting endpoints over https (verify against `ca_path`)."""
        return self.authority

    @property
    def msi_endpoint(self) -> str:
        return f"{self.api_url}/msi/token"

    @property
    def authority(self) -> str:
        return f"https://127.0.0.1:{self.tls_port}"

    @property
    def ca_path(self) -> str:
        if self._tls is None:
            raise RuntimeError("the sandbox has not been started")
        return str(self._tls.cert_path)

    def reset(self) -> None:
        """Knobs to their defaults; counters, quotas and the fault RNG to zero; identities and apps to the defaults
        (and the Graph directory extension too, when it exists)."""
        with self.knob_lock:
            self.knobs = copy.deepcopy(self._default_knobs)
        self.counters.clear()
        self.quota.clear()
        self.fault_plan.reseed()
        self.directory.restore_defaults()
        extension = self._directory_extension()
        if extension is not None and hasattr(extension, "reset"):
            extension.reset()

    def add_identity(self, client_id: str, roles: list[str]) -> None:
        self.directory.add_identity(client_id, roles)

    def add_tenant(self, tenant: str, *, seed: int, rows: int = 2_000) -> None:
        """A customer tenant with data of its own (another seed: other rows). Its engine is built once and kept
        across resets; the tenant itself is known until the next reset (add it again after one)."""
        with self._tenant_engines_lock:
            engine = self._tenant_engines.get(tenant)
            if engine is None or (engine.seed, engine.rows) != (seed, rows):
                if engine is not None:
                    engine.close()
                self._tenant_engines[tenant] = HuntingEngine(rows=rows, seed=seed)
        self.directory.add_tenant(tenant)

    def engine_for(self, tenant: str) -> HuntingEngine | None:
        """The data the hunting API serves to a token of `tenant`: a customer tenant's own (add_tenant), the home
        dataset for any other tenant the directory knows (the default app's and the managed identities' tenant, a
        tenant where a test registered an app), or None for a tenant it does not know."""
        with self._tenant_engines_lock:
            engine = self._tenant_engines.get(tenant)
        if engine is not None and tenant in self.directory.tenants:
            return engine
        return self.engine if self.directory.knows_tenant(tenant) else None

    def table_rows(self) -> dict[str, dict[str, int]]:
        """Rows per table of every dataset (what a query is charged for scanning): the home dataset under "home",
        each customer tenant's under its id."""
        with self._tenant_engines_lock:
            engines = dict(self._tenant_engines)
        home = {"home": self._engine.table_rows} if self._engine is not None else {}
        return {**home, **{tenant: engine.table_rows for tenant, engine in engines.items()}}

    def add_app(self, tenant: str, client_id: str, secret: str | None, roles: list[str],
                certificate_pem: bytes | None = None) -> None:
        self.directory.add_app(tenant, client_id, secret, roles, certificate_pem)

    # --- routing ---------------------------------------------------------------------------------------------

    def _token_lifetime(self) -> float:
        return self.knobs.token_lifetime_seconds

    def _identity_fault(self, endpoint: str) -> Reply | None:
        """Latency and 5xx faults scoped to the identity endpoints ("msi" or "token")."""
        faults = self.fault_plan.draw(self.knobs.faults, endpoint)
        if faults.latency_seconds > 0:
            self.stop_event.wait(faults.latency_seconds)
        if faults.status is None:
            return None
        if endpoint == "msi":
            return json_reply(faults.status, {"statusCode": faults.status, "message": "Injected fault."})
        return authority.aad_error(faults.status, "temporarily_unavailable", 50196, "Injected fault.")

    def _route_http(self, request: Request) -> Reply:
        endpoint, reply = self._dispatch_http(request)
        self.counters.count_call(endpoint, reply.status)
        return reply

    def _dispatch_http(self, request: Request) -> tuple[str, Reply]:
        api = HUNTING_PATHS.get(request.path)
        if api is not None:
            return api, hunting_call(request, api, self)
        if request.path == "/msi/token":
            fault = self._identity_fault("msi")
            return "msi", fault or identity.msi_token(request, self.directory, self.issuer, self.counters,
                                                      self._token_lifetime)
        if request.path.startswith(admin.PREFIX):
            return "admin", admin.admin_call(request, self)
        if request.path.startswith(DIRECTORY_PREFIX):
            return "directory", self._directory_call(request)
        if match := _FEDERATED_PATH.fullmatch(request.path):
            return "directory", self._federated_credential_call(request, match.group(1))
        return "unknown", error_reply(404, "graph", "ResourceNotFound", f"No sandbox endpoint at {request.path}.")

    @staticmethod
    def _directory_extension() -> Any:
        """`sandbox.graph_directory` if that module exists (another part of the sandbox), else None."""
        try:
            return importlib.import_module("sandbox.graph_directory")
        except ModuleNotFoundError as error:
            if error.name != "sandbox.graph_directory":
                raise
            return None

    def _federated_credential_call(self, request: Request, app_id: str) -> Reply:
        """`POST /v1.0/applications(appId='<id>')/federatedIdentityCredentials` as Graph takes it: {name, issuer,
        subject, audiences}; needs a Graph token with Application.ReadWrite.All."""
        self.counters.record_body("directory", request.body)
        scheme, _, token = (request.header("Authorization") or "").partition(" ")
        try:
            claims = self.issuer.verify(token.strip()) if scheme.lower() == "bearer" else None
        except TokenError:
            claims = None
        if claims is None or str(claims.get("aud", "")).rstrip("/") != "https://graph.microsoft.com":
            return json_reply(401, {"error": {"code": "InvalidAuthenticationToken",
                                              "message": "Access token is empty or invalid."}})
        if "Application.ReadWrite.All" not in (claims.get("roles") or []):
            return json_reply(403, {"error": {"code": "Authorization_RequestDenied",
                                              "message": "Insufficient privileges to complete the operation."}})
        if request.method != "POST":
            return json_reply(405, {"error": {"code": "Request_BadRequest", "message": "Use POST."}})
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict) or not all(isinstance(body.get(k), str) for k in ("name", "issuer", "subject")) \
                or body.get("audiences") != ["api://AzureADTokenExchange"]:
            return json_reply(400, {"error": {"code": "Request_BadRequest", "message": "Expected {name, issuer, "
                                              "subject, audiences: ['api://AzureADTokenExchange']}."}})
        if any(f.issuer == body["issuer"] and f.subject == body["subject"]
               for f in self.directory.federated_credentials(app_id)):
            return json_reply(409, {"error": {"code": "Request_BadRequest", "message": "FederatedIdentityCredential "
                                              "with the same issuer and subject already exists."}})
        self.directory.add_federated_credential(app_id, body["issuer"], body["subject"])
        return json_reply(201, {"id": str(uuid.uuid4()), **body})

    def _directory_call(self, request: Request) -> Reply:
        self.counters.record_body("directory", request.body)
        module = self._directory_extension()
        if module is None:
            return json_reply(404, {"error": {"code": "Request_ResourceNotFound",
                                              "message": "The sandbox has no Graph directory."}})
        claims: dict[str, Any] | None = None
        scheme, _, token = (request.header("Authorization") or "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            try:
                claims = self.issuer.verify(token.strip())
            except TokenError:
                claims = None
        status, payload = module.handle(request.method, request.path, request.query, request.body, claims)
        return json_reply(int(status), payload)

    def _route_tls(self, request: Request) -> Reply:
        endpoint: str
        if api := HUNTING_PATHS.get(request.path):
            reply, endpoint = hunting_call(request, api, self), api
        elif match := _OPENID.match(request.path):
            reply, endpoint = authority.openid_configuration(request, match.group(1), self.directory), "openid"
        elif match := _TOKEN.match(request.path):
            endpoint = "token"
            reply = self._identity_fault("token") or (
                authority.token(request, match.group(1), self.directory, self.issuer, self.counters,
                                self._token_lifetime)
                if request.method == "POST" else authority.aad_error(405, "invalid_request", 900561,
                                                                     "The endpoint only accepts POST requests."))
        elif match := _TOKEN_V1.match(request.path):
            endpoint = "token"
            reply = self._identity_fault("token") or (
                authority.token(request, match.group(1), self.directory, self.issuer, self.counters,
                                self._token_lifetime, v1=True)
                if request.method == "POST" else authority.aad_error(405, "invalid_request", 900561,
                                                                     "The endpoint only accepts POST requests."))
        elif _KEYS.match(request.path):
            reply, endpoint = json_reply(200, self.issuer.jwks()), "keys"
        else:
            reply, endpoint = error_reply(404, "graph", "ResourceNotFound",
                                          f"No sandbox endpoint at {request.path}."), "unknown"
        self.counters.count_call(endpoint, reply.status)
        return reply
