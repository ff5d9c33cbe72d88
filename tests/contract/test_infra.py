"""Contract tests between the code and its deployment (no Bicep compiler is reachable here, so the Bicep is read
as text): every setting the relay reads is set by the template or documented as optional; names and defaults
agree between host.json, shared/core/settings.py and the Bicep; role ids match their names; no secret literal in any
template; the package leaves development files out; and the Bicep is at least well-formed."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pytest

from shared.adapters import telemetry
from shared.adapters.telemetry import METRIC_ATTRIBUTES, METRICS, SPAN_ATTRIBUTES
from shared.core.apis import APIS
from shared.core.settings import SETTINGS

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
MAIN = INFRA / "main.bicep"
FUNCTION_APP = INFRA / "app" / "function-app.bicep"
RBAC = INFRA / "app" / "rbac.bicep"
WORKBOOK = INFRA / "app" / "workbook.json"
WORKBOOK_MODULE = INFRA / "app" / "workbook.bicep"
GUIDE = ROOT / "docs" / "deploy.md"


# Azure built-in roles (learn.microsoft.com/azure/role-based-access-control/built-in-roles), by name.
KNOWN_ROLES = {
    "Storage Queue Data Reader": "19e7f393-937e-4f77-808e-94535e297925",
    "Storage Queue Data Message Processor": "8a0f0c08-91a1-4084-bc3d-661d67233fed",
    "Storage Queue Data Message Sender": "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a",
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Blob Data Contributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    "Storage Blob Data Reader": "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1",
    "Storage Blob Delegator": "db58b8e5-c6ad-4a2a-8342-4190687cbf4a",
    "Storage Table Data Contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
    "Key Vault Secrets User": "4633458b-17de-408a-b874-0445c86b69e6",
    "Key Vault Secrets Officer": "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
}
REQUIRED_RELAY_ROLES = ("Storage Queue Data Reader", "Storage Queue Data Message Processor",
                        "Storage Queue Data Message Sender", "Storage Blob Data Owner",
                        "Storage Blob Data Contributor", "Storage Blob Delegator", "Storage Table Data Contributor",
                        "Monitoring Metrics Publisher", "Key Vault Secrets User")
# The Bicep parameter that carries each setting's value, as main.bicep names it.
SETTING_PARAMETERS = {"HUNT_QUEUE": "queueName", "HUNT_RESULTS_CONTAINER": "resultsContainerName",
                      "HUNT_DEADLETTER_CONTAINER": "deadLetterContainerName", "HUNT_GATE_TABLE": "gateTableName",
                      "HUNT_JOBS_TABLE": "jobsTableName", "HUNT_BREAKER_TABLE": "breakerTableName",
                      "HUNT_API": "huntApi", "HUNT_CLOUD": "huntCloud", "HUNT_AUTH": "authMode",
                      "HUNT_CALLS_PER_MINUTE": "callsPerMinute", "HUNT_CALLS_PER_HOUR": "callsPerHour",
                      "HUNT_ALLOW_RAW_QUERIES": "allowRawQueries"}
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


def template_files() -> list[Path]:
    return [*bicep_files(), *sorted(INFRA.rglob("*.json")), ROOT / "azure.yaml"]


def all_settings() -> list[str]:
    return [s.name for s in SETTINGS]


def code_default(name: str) -> str | None:
    defaults = {s.name: s.default for s in SETTINGS}
    return defaults[name]


def app_setting_keys() -> set[str]:
    """Every object key in the function app module (settings are keys of the app settings' objects)."""
    return set(re.findall(r"(?:^|[{,])\s*([A-Za-z][A-Za-z0-9_]*)\s*:", FUNCTION_APP.read_text(), re.MULTILINE))


def set_by_template(name: str) -> bool:
    return any(key == name or key.startswith(name + "__") for key in app_setting_keys())


def guide_settings() -> dict[str, str]:
    """setting -> its 'in Azure' cell, from the guide's settings table (| `NAME` | default | in Azure | meaning |):
    a cell starts with 'template' (the template sets it) or 'optional' (the code's default applies)."""
    rows = re.findall(r"^\|\s*`([A-Za-z_][A-Za-z0-9_]*)`\s*\|[^|]*\|([^|]*)\|", GUIDE.read_text(), re.MULTILINE)
    return {name: cell.strip().lower() for name, cell in rows}


def bicep_param_defaults(path: Path) -> dict[str, str]:
    return dict(re.findall(r"^param (\w+) \w+ = '?([^'\n]*?)'?\s*$", path.read_text(), re.MULTILINE))


# --- settings ---------------------------------------------------------------------------------------------------

def test_every_setting_the_relay_reads_is_set_by_the_template_or_documented_as_optional() -> None:
    documented = guide_settings()
    missing = [name for name in all_settings()
               if not set_by_template(name) and not documented.get(name, "").startswith("optional")]

    assert missing == []


def test_the_guide_lists_every_setting_and_says_truly_whether_the_template_sets_it() -> None:
    documented = guide_settings()

    assert [name for name in all_settings() if name not in documented] == []
    claimed = [name for name, cell in documented.items() if cell.startswith("template")]
    assert claimed and [name for name in claimed if not set_by_template(name)] == []


def test_every_relay_setting_the_template_writes_is_one_the_code_reads() -> None:
    relay_keys = {key for key in app_setting_keys() if key.startswith(("HUNT_", "AZURE_"))}
    webhook_secret_settings = set()   # written from destinations.json, checked by its own test

    assert relay_keys - set(all_settings()) - webhook_secret_settings == set()


def test_literal_defaults_in_the_template_equal_the_code_s_defaults() -> None:
    literals = dict(re.findall(r"^\s*(HUNT_\w+):\s*'([^']*)'", FUNCTION_APP.read_text(), re.MULTILINE))

    assert literals, "the template writes no literal settings"
    assert {k: v for k, v in literals.items() if v != code_default(k)} == {}


@pytest.mark.parametrize("setting", sorted(SETTING_PARAMETERS))
def test_each_parameter_carrying_a_setting_defaults_to_the_code_s_default(setting: str) -> None:
    parameter = SETTING_PARAMETERS[setting]
    function_app = FUNCTION_APP.read_text()

    assert re.search(rf"^\s*{setting}: (string\()?{parameter}\)?$", function_app, re.MULTILINE)
    assert bicep_param_defaults(MAIN)[parameter] == code_default(setting)
    azd = json.loads((INFRA / "main.parameters.json").read_text())["parameters"].get(parameter)
    if azd is not None:   # `${HUNT_API=mde}`: azd's default must agree too
        assert azd["value"] == f"${{{setting}={code_default(setting)}}}"


def test_the_poison_threshold_agrees_between_host_json_the_code_and_the_template() -> None:
    host = json.loads((ROOT / "host.json").read_text())["extensions"]["queues"]
    literal = re.search(r"HUNT_MAX_DEQUEUE_COUNT:\s*'(\d+)'", FUNCTION_APP.read_text())

    assert literal is not None
    assert str(host["maxDequeueCount"]) == code_default("HUNT_MAX_DEQUEUE_COUNT") == literal.group(1)
    assert host["messageEncoding"] == "none"


def test_the_template_creates_the_queues_containers_and_table_the_code_uses() -> None:
    main = MAIN.read_text()
    triggers = (ROOT / "function_app.py").read_text()

    assert 'queue_name="%HUNT_QUEUE%"' in triggers and 'queue_name="%HUNT_QUEUE%-poison"' in triggers
    assert "var queueNames = [queueName, '${queueName}-poison']" in main
    assert "queueNames: union(queueNames, destinationQueueNames)" in main   # queue destinations too
    assert "union([resultsContainerName, deadLetterContainerName], blobDestinationContainers)" in main
    assert "containerNames: union(hostContainerNames, dataContainerNames, [stateContainerName])" in main
    assert f"var stateContainerName = '{code_default('HUNT_STATE_CONTAINER')}'" in main
    assert "tableNames: [gateTableName, jobsTableName, breakerTableName]" in main
    defaults = bicep_param_defaults(MAIN)
    assert (defaults["queueName"], defaults["resultsContainerName"], defaults["deadLetterContainerName"],
            defaults["gateTableName"], defaults["jobsTableName"], defaults["breakerTableName"]) == (
        code_default("HUNT_QUEUE"), code_default("HUNT_RESULTS_CONTAINER"), code_default("HUNT_DEADLETTER_CONTAINER"),
        code_default("HUNT_GATE_TABLE"), code_default("HUNT_JOBS_TABLE"), code_default("HUNT_BREAKER_TABLE"))


def test_every_table_setting_names_a_table_the_template_creates_with_the_code_s_default() -> None:
    """HUNT_*_TABLE: the function app gets it from a main.bicep parameter that is in the storage module's tableNames
    and defaults to the code's default (a new table setting without its table fails here)."""
    main = MAIN.read_text()
    created = re.search(r"^    tableNames: \[([^\]]*)\]$", main, re.MULTILINE)
    assert created is not None
    tables = {name.strip() for name in created.group(1).split(",")}
    table_settings = [s.name for s in SETTINGS if s.name.endswith("_TABLE")]
    assert "HUNT_BREAKER_TABLE" in table_settings

    for setting in table_settings:
        carried = re.search(rf"^\s*{setting}: (\w+)$", FUNCTION_APP.read_text(), re.MULTILINE)
        assert carried is not None, f"{setting} is not an app setting"
        parameter = carried.group(1)
        assert parameter in tables, f"{setting}: {parameter} is not in tableNames"
        assert re.search(rf"^    {parameter}: {parameter}$", main.split("module functionApp")[1], re.MULTILINE)
        assert bicep_param_defaults(MAIN)[parameter] == code_default(setting)


def test_webhook_secret_settings_from_the_destinations_file_become_key_vault_references() -> None:
    destinations = json.loads((INFRA / "destinations.json").read_text())
    function_app = FUNCTION_APP.read_text()

    assert isinstance(destinations, dict)
    assert "keyVaultReference(keyVaultUri, toLower(replace(setting, '_', '-')))" in function_app
    assert "AZURE_CLIENT_SECRET: keyVaultReference(keyVaultUri, clientSecretName)" in function_app
    assert "'@Microsoft.KeyVault(SecretUri=${vaultUri}secrets/${secretName}/)'" in function_app


# --- identity, roles and APIs -----------------------------------------------------------------------------------

def test_storage_is_reached_by_the_user_assigned_identity_only() -> None:
    keys = app_setting_keys()
    function_app = FUNCTION_APP.read_text()

    assert "AzureWebJobsStorage" not in keys   # no connection string
    assert {"AzureWebJobsStorage__blobServiceUri", "AzureWebJobsStorage__queueServiceUri",
            "AzureWebJobsStorage__tableServiceUri"} <= keys
    assert "AzureWebJobsStorage__credential: 'managedidentity'" in function_app
    assert "AzureWebJobsStorage__clientId: identityClientId" in function_app
    assert "APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'" \
        in function_app


def test_every_role_id_in_the_templates_is_commented_with_its_built_in_name() -> None:
    app_ids = {spec.resource_app_id: spec.resource_name for spec in APIS.values()}
    unexplained = []
    for path in bicep_files():
        for line in path.read_text().splitlines():
            for guid in GUID.findall(line):
                comment = line.partition("//")[2].strip()
                if KNOWN_ROLES.get(comment) != guid.lower() and app_ids.get(guid.lower()) != comment:
                    unexplained.append(f"{path.name}: {line.strip()}")

    assert unexplained == []


def test_the_rbac_module_grants_every_role_the_relay_needs_and_holds_every_assignment() -> None:
    rbac = RBAC.read_text()
    comments = {line.partition("//")[2].strip() for line in rbac.splitlines() if GUID.search(line)}
    assigned_in = {p.name for p in bicep_files() if "Microsoft.Authorization/roleAssignments" in p.read_text()}

    assert set(REQUIRED_RELAY_ROLES) <= comments
    assert assigned_in == {"rbac.bicep"}
    assert "principalType: 'ServicePrincipal'" in rbac


def test_the_hunting_apis_in_the_template_match_the_code() -> None:
    main = MAIN.read_text()
    for name, spec in APIS.items():
        assert re.search(rf"^\s*{name}: {{ appId: '{spec.resource_app_id}', role: '{spec.role}' }}"
                         rf" // {re.escape(spec.resource_name)}$", main, re.MULTILINE), name
    permission = (INFRA / "app" / "hunting-permission.bicep").read_text()
    assert "extension microsoftGraphV1" in permission
    assert "'Microsoft.Graph/servicePrincipals@v1.0' existing" in permission
    assert "'Microsoft.Graph/appRoleAssignedTo@v1.0'" in permission
    assert "filter(huntingApi.appRoles, role => role.value == appRoleValue)[0].id" in permission
    config = json.loads((INFRA / "bicepconfig.json").read_text())
    graph_types = config["extensions"]["microsoftGraphV1"]
    assert graph_types.startswith("br:mcr.microsoft.com/bicep/extensions/microsoftgraph/v1.0:")


# --- secrets and hardening --------------------------------------------------------------------------------------

FORBIDDEN = [r"AccountKey\s*=", r"SharedAccessSignature\s*=", r"[?&]sig=", r"whsec_", r"listKeys\(",
             r"-----BEGIN", r"InstrumentationKey\s*="]
# A name that holds the name, address or role of a secret, not the secret itself.
SECRET_REFERENCE_NAME = re.compile(r"(?i)(name|names|setting|settings|uri|user|officer)$")


@pytest.mark.parametrize("pattern", FORBIDDEN)
def test_no_template_holds_a_secret_literal(pattern: str) -> None:
    found = [f"{path.relative_to(ROOT)}: {match.group(0)}" for path in template_files()
             for match in re.finditer(pattern, path.read_text())]

    assert found == []


SECRET_ASSIGNMENT = re.compile(
    r"(?i)\b(\w*(?:password|secret|apikey|api_key|token)\w*)['\"]?\s*[:=]\s*['\"]([^'\"]*)['\"]")


def test_no_secret_like_name_is_given_a_literal_value() -> None:
    literals = []
    for path in template_files():
        for name, value in SECRET_ASSIGNMENT.findall(path.read_text()):
            if value and not SECRET_REFERENCE_NAME.search(name) and not value.startswith("@Microsoft.KeyVault(") \
                    and not value.startswith("${"):
                literals.append(f"{path.relative_to(ROOT)}: {name} = {value!r}")

    assert literals == []
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    # azd would write such a value into .azure/<env>/.env in clear: secrets go to Key Vault instead.
    assert [name for name in parameters if re.search(r"(?i)secret|password", name)] == []


def test_every_secret_like_parameter_is_secure_and_no_output_carries_one() -> None:
    insecure, leaking = [], []
    for path in bicep_files():
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if match := re.match(r"param (\w+) ", line):
                decorators = " ".join(lines[max(0, i - 3):i])
                name = match.group(1)
                if re.search(r"(?i)secret|password|key$", name) and not SECRET_REFERENCE_NAME.search(name) \
                        and "@secure()" not in decorators:
                    insecure.append(f"{path.name}: {match.group(1)}")
            output = re.match(r"output (\w+) ", line)
            if output and re.search(r"(?i)secret|password|connection_?string|key$", output.group(1)):
                leaking.append(f"{path.name}: {line}")

    assert (insecure, leaking) == ([], [])


def test_the_storage_account_key_vault_and_telemetry_refuse_keys_and_anonymous_access() -> None:
    storage = (INFRA / "app" / "storage.bicep").read_text()
    monitoring = (INFRA / "app" / "monitoring.bicep").read_text()
    vault = (INFRA / "app" / "key-vault.bicep").read_text()

    for setting in ("allowSharedKeyAccess: false", "minimumTlsVersion: 'TLS1_2'", "allowBlobPublicAccess: false",
                    "supportsHttpsTrafficOnly: true"):
        assert setting in storage
    assert "DisableLocalAuth: true" in monitoring
    assert "enableRbacAuthorization: true" in vault


def test_the_function_app_runs_python_3_11_on_flex_consumption_as_the_identity() -> None:
    function_app = FUNCTION_APP.read_text()

    assert "name: 'FC1'" in function_app and "tier: 'FlexConsumption'" in function_app
    assert re.search(r"runtime: \{\s*name: 'python'\s*version: '3.11'\s*\}", function_app)
    assert "type: 'UserAssigned'" in function_app and "keyVaultReferenceIdentity: identityId" in function_app
    # Flex Consumption refuses these: the runtime is set in functionAppConfig instead.
    assert not {"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_RUN_FROM_PACKAGE"} & \
        app_setting_keys()


# --- packaging and azd ------------------------------------------------------------------------------------------

def test_funcignore_keeps_development_files_out_of_the_package() -> None:
    ignored = {line.strip().rstrip("/") for line in (ROOT / ".funcignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}

    assert {"tests", "sandbox", "bench", "infra", "docs", "azure.yaml"} <= ignored
    assert "templates" not in ignored and "shared" not in ignored   # the relay and its templates ship


def simple_yaml(text: str) -> dict[str, object]:
    """Nested `key: value` mappings by indentation: enough for azure.yaml."""
    root: dict[str, object] = {}
    stack: list[tuple[int, dict[str, object]]] = [(-1, root)]
    for raw in text.splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        indent = len(raw) - len(raw.lstrip())
        key, _, value = raw.strip().partition(":")
        while stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        if value.strip():
            parent[key] = value.strip()
        else:
            child: dict[str, object] = {}
            parent[key] = child
            stack.append((indent, child))
    return root


def test_azure_yaml_names_the_function_app_service_in_python() -> None:
    azure = simple_yaml((ROOT / "azure.yaml").read_text())
    services = azure["services"]
    assert isinstance(services, dict)

    assert services["relay"] == {"project": ".", "language": "python", "host": "function"}
    assert azure["infra"] == {"provider": "bicep", "path": "infra", "module": "main"}
    assert "tags: union(tags, { 'azd-service-name': 'relay' })" in FUNCTION_APP.read_text()


def test_the_azd_parameters_file_only_feeds_parameters_main_bicep_declares() -> None:
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    declared = set(re.findall(r"^param (\w+) ", MAIN.read_text(), re.MULTILINE))

    assert set(parameters) <= declared
    assert {"environmentName", "location", "principalId"} <= set(parameters)


def test_the_outputs_a_user_needs_exist_and_the_guide_reads_only_real_ones() -> None:
    outputs = set(re.findall(r"^output (\w+) ", MAIN.read_text(), re.MULTILINE))
    read_by_guide = set(re.findall(r"azd env get-value (\w+)", GUIDE.read_text()))

    assert {"HUNT_QUEUE_URL", "AZURE_STORAGE_ACCOUNT_NAME", "HUNT_IDENTITY_CLIENT_ID", "HUNT_IDENTITY_PRINCIPAL_ID",
            "AZURE_FUNCTION_APP_NAME"} <= outputs
    assert read_by_guide and read_by_guide <= outputs


# --- well-formed Bicep (what a compiler would catch first) -------------------------------------------------------

def bicep_code(text: str) -> str:
    """The text with comments and string literals blanked, interpolations kept (they hold code)."""
    out: list[str] = []
    modes = ["code"]          # code | string; an interpolation pushes code, its closing brace pops it
    depth = [0]               # brace depth within each interpolation
    i = 0
    while i < len(text):
        char, mode = text[i], modes[-1]
        if mode == "code":
            if text.startswith("//", i):
                i = text.find("\n", i) if "\n" in text[i:] else len(text)
                continue
            if char == "'":
                modes.append("string")
            elif char == "{":
                depth[-1] += 1
            elif char == "}" and len(modes) > 1 and depth[-1] == 0:
                modes.pop()
                depth.pop()
                i += 1
                continue
            elif char == "}":
                depth[-1] -= 1
            out.append(char if char != "'" else " ")
        elif text.startswith("\\'", i) or text.startswith("\\\\", i):
            i += 2
            continue
        elif char == "'":
            modes.pop()
        elif text.startswith("${", i):
            modes.append("code")
            depth.append(0)
            i += 2
            continue
        i += 1
    assert modes == ["code"], "a string or interpolation is never closed"
    return "".join(out)


@pytest.mark.parametrize("path", bicep_files(), ids=lambda p: p.name)
def test_each_bicep_file_has_balanced_brackets_and_closed_strings(path: Path) -> None:
    code = bicep_code(path.read_text())
    pairs, stack = {")": "(", "]": "[", "}": "{"}, []
    for char in code:
        if char in "([{":
            stack.append(char)
        elif char in pairs:
            assert stack and stack.pop() == pairs[char], f"unbalanced {char!r} in {path.name}"

    assert stack == []


def module_params(path: Path) -> tuple[set[str], set[str]]:
    """(declared, required) parameters of a Bicep file."""
    declared, required = set(), set()
    for name, rest in re.findall(r"^param (\w+) (.*)$", path.read_text(), re.MULTILINE):
        declared.add(name)
        if " = " not in f" {rest} ":
            required.add(name)
    return declared, required


def test_main_passes_each_module_only_parameters_it_declares_and_all_it_requires() -> None:
    main = MAIN.read_text()
    problems = []
    for name, target, body in re.findall(r"^module (\w+) '([^']+)' = [^{]*\{\n(.*?)^\}", main,
                                         re.MULTILINE | re.DOTALL):
        params_block = re.search(r"^  params: \{\n(.*?)^  \}", body, re.MULTILINE | re.DOTALL)
        passed = set(re.findall(r"^    (\w+):", params_block.group(1), re.MULTILINE)) if params_block else set()
        declared, required = module_params(INFRA / target)
        if passed - declared or required - passed:
            problems.append((name, sorted(passed - declared), sorted(required - passed)))

    assert problems == []
    assert len(re.findall(r"^module ", main, re.MULTILINE)) == 9


def test_only_the_relay_s_identity_has_a_role_on_its_state_container() -> None:
    rbac = RBAC.read_text()
    grants = re.findall(r"scope: stateContainer\n\s*properties: \{\n\s*roleDefinitionId: [^\n]*roles\.(\w+)\)\n"
                        r"\s*principalId: (\w+)", rbac)

    assert grants == [("blobContributor", "identityPrincipalId")]
    assert "stateContainerName" not in rbac.split("// --- the deployer")[-1]


def test_the_multi_tenant_app_is_optional_keyless_and_trusts_only_the_relay_s_identity() -> None:
    """HUNT_TENANTS with auth "federated": the app the relay's managed identity signs in as, in customer tenants."""
    main = MAIN.read_text()
    app = (INFRA / "app" / "multi-tenant-app.bicep").read_text()
    assert re.search(r"^param enableMultiTenantApp bool = false$", main, re.MULTILINE), "off by default"
    assert "module multiTenantApp 'app/multi-tenant-app.bicep' = if (enableMultiTenantApp) {" in main
    assert "identityPrincipalId: identity.outputs.principalId" in main.split("module multiTenantApp")[1]
    assert "output HUNT_MULTI_TENANT_APP_ID string = enableMultiTenantApp ? multiTenantApp.outputs.appId : ''" in main
    assert "extension microsoftGraphV1" in app
    assert "resource app 'Microsoft.Graph/applications@v1.0'" in app
    assert "signInAudience: 'AzureADMultipleOrgs'" in app
    assert "resource relayIdentity 'federatedIdentityCredentials@v1.0'" in app
    assert "audiences: ['api://AzureADTokenExchange']" in app
    assert "issuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'" in app
    assert "subject: identityPrincipalId" in app
    # the hunting role is requested by value (no hard-coded role id), and no credential but the federated one
    assert "role.value == 'ThreatHunting.Read.All'" in app
    assert not re.search(r"passwordCredentials|keyCredentials", app)
    assert "HUNT_MULTI_TENANT_APP_ID" in GUIDE.read_text()


def test_entra_id_for_the_http_api_is_an_option_the_template_supports() -> None:
    """Function keys by default; with apiAudience, App Service authentication checks Entra ID tokens, the triggers
    go anonymous, and the relay checks the token too (HUNT_API_AUDIENCE)."""
    main = MAIN.read_text()
    app = (INFRA / "app" / "function-app.bicep").read_text()
    triggers = (ROOT / "function_app.py").read_text()
    assert re.search(r"^param apiAudience string = ''$", main, re.MULTILINE), "off by default"
    assert "apiAudience: apiAudience" in main and "apiAppClientId: apiAppClientId" in main
    assert "resource apiAuthentication 'Microsoft.Web/sites/config@2024-04-01' = if (!empty(apiAudience)) {" in app
    assert "name: 'authsettingsV2'" in app and "requireAuthentication: true" in app
    assert "unauthenticatedClientAction: 'Return401'" in app and "allowedAudiences: [apiAudience]" in app
    assert "HUNT_API_AUDIENCE: apiAudience, HUNT_API_AUTH_LEVEL: 'anonymous'" in app
    assert 'auth_level=API_AUTH' in triggers and "func.AuthLevel.FUNCTION" in triggers
    assert code_default("HUNT_API_AUTH_LEVEL") == "function"


# --- telemetry and the workbook ---------------------------------------------------------------------------------
# The relay's OpenTelemetry metrics land in Application Insights' customMetrics (name = the instrument's name, the
# attributes in customDimensions) and its spans in requests (the CONSUMER `hunt` span) and dependencies (the steps).

WORKBOOK_ROOT = "microsoft.insights/components"
VISUALIZATIONS = {"timechart", "barchart", "table", "tiles", "linechart", "areachart", "piechart", "categoricalbar"}
METRIC_NAME = re.compile(r"\bhunt_relay(?:\.[a-z][a-z0-9_]*)+")
# customDimensions['hunt.tenant'] / ["hunt.tenant"] / .tenant (a dotted path reads nested keys: only its first part
# is a key, so customDimensions.hunt.tenant reads "hunt" and fails as it should)
DIMENSION = re.compile(r"customDimensions\s*(?:\[\s*(['\"])(?P<key>[^'\"]*)\1\s*\]|\.(?P<dotted>[A-Za-z_]\w*))")
PLACEHOLDER = re.compile(r"\{([A-Za-z_]\w*)(?::[^}]*)?\}")
ATTRIBUTES_BY_TABLE = {"customMetrics": METRIC_ATTRIBUTES, "requests": SPAN_ATTRIBUTES, "dependencies": SPAN_ATTRIBUTES}


def workbook() -> dict:
    return json.loads(WORKBOOK.read_text())


def workbook_items(items: list[dict]) -> list[dict]:
    """Every item, those inside groups (type 12) included."""
    found = []
    for item in items:
        found.append(item)
        if item.get("type") == 12:
            found.extend(workbook_items(item["content"].get("items", [])))
    return found


def workbook_parameters() -> list[dict]:
    return [parameter for item in workbook_items(workbook()["items"]) if item["type"] == 9
            for parameter in item["content"]["parameters"]]


def workbook_queries() -> list[str]:
    """The KQL of every query item and of every parameter filled by a query."""
    queries = [item["content"]["query"] for item in workbook_items(workbook()["items"]) if item["type"] == 3]
    return queries + [parameter["query"] for parameter in workbook_parameters() if "query" in parameter]


def query_table(query: str) -> str:
    first = re.match(r"\s*(\w+)", query)
    assert first is not None, query
    return first.group(1)


def dimensions_read(query: str) -> set[str]:
    return {match.group("key") if match.group("key") is not None else match.group("dotted")
            for match in DIMENSION.finditer(query)}


def test_the_workbook_is_a_notebook_whose_query_items_ask_application_insights() -> None:
    document = workbook()
    items = workbook_items(document["items"])
    queries = [item for item in items if item["type"] == 3]

    assert document["version"] == "Notebook/1.0"
    assert {item["type"] for item in items} <= {1, 3, 9, 12}
    assert len(queries) >= 10
    for item in queries:
        content = item["content"]
        assert content["version"] == "KqlItem/1.0", item["name"]
        assert content["query"].strip(), item["name"]
        assert content["queryType"] == 0 and content["resourceType"] == WORKBOOK_ROOT, item["name"]
        assert content["visualization"] in VISUALIZATIONS, item["name"]
        assert content.get("timeContextFromParameter") == "TimeRange", item["name"]
    names = [item["name"] for item in items]
    assert len(names) == len(set(names)), "item names are unique"


def test_the_workbook_s_parameters_are_a_time_range_and_a_tenant_and_every_placeholder_is_one() -> None:
    parameters = {parameter["name"]: parameter for parameter in workbook_parameters()}

    assert parameters["TimeRange"]["type"] == 4
    assert parameters["Tenant"]["type"] == 2 and parameters["Tenant"]["multiSelect"] is True
    assert parameters["Tenant"]["typeSettings"]["selectAllValue"] == "*"
    assert parameters["Tenant"]["resourceType"] == WORKBOOK_ROOT
    for query in workbook_queries():
        assert set(PLACEHOLDER.findall(query)) <= set(parameters), query
    tenant_filtered = [query for query in workbook_queries() if "{Tenant}" in query]
    assert tenant_filtered and all("'*' in ({Tenant}) or tenant in ({Tenant})" in query for query in tenant_filtered)


def test_every_metric_the_workbook_charts_is_one_the_relay_emits_and_every_one_is_charted() -> None:
    emitted = {metric.name for metric in METRICS}
    charted = {name for query in workbook_queries() for name in METRIC_NAME.findall(query)}

    assert {metric.kind for metric in METRICS} <= {"counter", "histogram", "gauge"}
    assert charted - emitted == set(), "the workbook charts metrics the relay does not emit"
    assert emitted - charted == set(), "metrics the relay emits that the workbook does not chart"
    for query in workbook_queries():
        if query_table(query) == "customMetrics":   # each metric query picks its metrics by exact name
            assert re.search(r"\| where name == 'hunt_relay\.[a-z0-9_.]+'", query), query


def test_the_workbook_reads_only_attributes_the_relay_exports_on_that_table() -> None:
    unknown = []
    for query in workbook_queries():
        table = query_table(query)
        assert table in ATTRIBUTES_BY_TABLE, f"unexpected table {table}"
        unknown += [(table, key) for key in dimensions_read(query) if key not in ATTRIBUTES_BY_TABLE[table]]
        # customDimensions only by key: never the whole bag (spans carry nothing secret, but show only what is meant)
        assert not re.search(r"customDimensions(?!\s*[\[.])", query), query

    assert unknown == []
    read = {key for query in workbook_queries() for key in dimensions_read(query)}
    assert {"hunt.status", "hunt.cause", "hunt.api", "hunt.tenant", "hunt.quota.window", "messaging.destination.name",
            "hunt.destination", "http.response.status_code"} <= read


def test_the_workbook_lists_recent_failed_hunt_spans_by_job_tenant_and_error() -> None:
    failed = [query for query in workbook_queries() if query_table(query) == "requests"]

    assert len(failed) == 1
    query = failed[0]
    assert "| where name == 'hunt' and success == false" in query
    assert {"hunt.job_id", "hunt.tenant", "hunt.error_code"} <= dimensions_read(query)
    assert "order by timestamp desc" in query


def test_the_workbook_checks_catch_a_misspelt_metric_and_an_unknown_attribute() -> None:
    """The regexes above on known-bad queries: the contract tests can fail."""
    bad = "customMetrics | where name == 'hunt_relay.hunt' | extend t = tostring(customDimensions['hunt.tennant'])"

    assert set(METRIC_NAME.findall(bad)) - {metric.name for metric in METRICS} == {"hunt_relay.hunt"}
    assert dimensions_read(bad) - METRIC_ATTRIBUTES == {"hunt.tennant"}
    assert dimensions_read("requests | extend j = customDimensions.hunt.job_id") == {"hunt"}


def module_block(main: str, name: str) -> tuple[str, str]:
    found = re.search(rf"^module {name} '([^']+)' = [^{{]*\{{\n(.*?)^\}}", main, re.MULTILINE | re.DOTALL)
    assert found is not None, f"no module {name}"
    return found.group(1), found.group(2)


def test_main_deploys_the_workbook_on_the_application_insights_component() -> None:
    main = MAIN.read_text()
    module = WORKBOOK_MODULE.read_text()
    target, body = module_block(main, "workbook")

    assert target == "app/workbook.bicep"
    assert main.index("module workbook ") > main.index("module monitoring ")
    assert "applicationInsightsName: monitoring.outputs.applicationInsightsName" in body
    assert "tags: tags" in body and "scope: rg" in body and "location: location" in body
    assert "resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {\n" \
           "  name: applicationInsightsName\n}" in module
    assert "resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {" in module
    assert "name: guid(resourceGroup().id, 'hunt-relay-workbook')" in module
    assert "kind: 'shared'" in module and "category: 'workbook'" in module
    assert "sourceId: applicationInsights.id" in module
    assert "serializedData: string(union(loadJsonContent('workbook.json'), " \
           "{ fallbackResourceIds: [applicationInsights.id] }))" in module


def test_the_host_and_worker_export_opentelemetry_as_the_relay_configures_it() -> None:
    """host.json's telemetryMode is OpenTelemetry; the relay calls configure_azure_monitor itself (no automatic
    instrumentation, no log export), so the worker must not do it too (PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY
    'true' would, with every instrumentation on) nor claim to export logs (PYTHON_ENABLE_OPENTELEMETRY: the host
    would then stop forwarding the worker's logs, and the relay exports none)."""
    host = json.loads((ROOT / "host.json").read_text())
    function_app = FUNCTION_APP.read_text()
    providers = inspect.getsource(telemetry._providers)

    assert host["telemetryMode"] == "OpenTelemetry"
    assert re.search(r"^  PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'false'$", function_app, re.MULTILINE)
    assert "PYTHON_ENABLE_OPENTELEMETRY" not in app_setting_keys()
    assert {"APPLICATIONINSIGHTS_CONNECTION_STRING", "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"} <= app_setting_keys()
    assert "disable_logging=True" in providers and '{"enabled": False}' in providers


def test_the_guide_says_what_is_exported_and_how_to_open_the_workbook() -> None:
    guide = GUIDE.read_text()

    assert "## Telemetry and the workbook" in guide
    for phrase in ("customMetrics", "requests", "Workbooks", "telemetryMode",
                   "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"):
        assert phrase in guide, phrase


def test_the_relay_s_identity_may_write_every_table_the_code_uses() -> None:
    rbac = RBAC.read_text()
    main = MAIN.read_text()
    for table in ("gateTable", "jobsTable", "breakerTable"):
        assert re.search(rf"resource {table}Grant 'Microsoft.Authorization/roleAssignments@[0-9-]+' = \{{\s*"
                         rf"name: guid\({table}\.id, identityPrincipalId, roles\.tableContributor\)\s*"
                         rf"scope: {table}\b", rbac), table
        assert f"    {table}Name: {table}Name" in main, table
