"""Azurite, the Azure Storage emulator, as a child process on loopback.

Installed into the project by `npm ci` (never globally) and started on free ports chosen by Azurite itself
(port 0), read back from its own "successfully listening" lines. In-memory by default; with a `location` it
persists to disk, so that a test can stop it and start it again on the same ports without losing data.
Whoever starts it stops it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AZURITE_BIN = ROOT / "node_modules" / ".bin" / "azurite"

# The emulator's well-known development account (documented by Microsoft; not a secret).
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

_LISTENING = re.compile(r"Azurite (Blob|Queue|Table) service is successfully listening at http://[^:]+:(\d+)")


@dataclass
class Ports:
    blob: int = 0
    queue: int = 0
    table: int = 0


@dataclass
class Azurite:
    """One Azurite process. `start()` returns once all three services listen."""

    location: Path | None = None
    ports: Ports = field(default_factory=Ports)
    _process: subprocess.Popen[str] | None = None
    _workdir: Path | None = None
    _output: list[str] = field(default_factory=list)

    @property
    def connection_string(self) -> str:
        base = "http://127.0.0.1"
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={base}:{self.ports.blob}/{ACCOUNT_NAME};"
            f"QueueEndpoint={base}:{self.ports.queue}/{ACCOUNT_NAME};"
            f"TableEndpoint={base}:{self.ports.table}/{ACCOUNT_NAME};"
        )

    def start(self, timeout: float = 30.0) -> Azurite:
        if not AZURITE_BIN.exists():
            raise RuntimeError(f"Azurite is not installed at {AZURITE_BIN}: run `npm ci` (or `make setup`) first")
        # Azurite writes debug and state files into its working directory: keep them out of the repository.
        self._workdir = Path(tempfile.mkdtemp(prefix="azurite-"))
        args = [
            str(AZURITE_BIN),
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--loose",
            "--silent",   # no access log: a line per request costs Azurite a quarter of its CPU per request
            "--blobHost", "127.0.0.1", "--blobPort", str(self.ports.blob),
            "--queueHost", "127.0.0.1", "--queuePort", str(self.ports.queue),
            "--tableHost", "127.0.0.1", "--tablePort", str(self.ports.table),
        ]
        if self.location is None:
            args.append("--inMemoryPersistence")
        else:
            self.location.mkdir(parents=True, exist_ok=True)
            args += ["--location", str(self.location)]
        self._output = []
        self._process = subprocess.Popen(
            args, cwd=self._workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        found: dict[str, int] = {}
        ready = threading.Event()

        def read() -> None:
            assert self._process is not None and self._process.stdout is not None
            for line in self._process.stdout:
                self._output.append(line.rstrip())
                match = _LISTENING.search(line)
                if match:
                    found[match.group(1)] = int(match.group(2))
                    if len(found) == 3:
                        ready.set()
            ready.set()  # process ended

        threading.Thread(target=read, name="azurite-output", daemon=True).start()
        if not ready.wait(timeout) or len(found) < 3:
            self.stop()
            raise RuntimeError("Azurite did not start:\n" + "\n".join(self._output[-20:]))
        self.ports = Ports(blob=found["Blob"], queue=found["Queue"], table=found["Table"])
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stop and start again on the same ports (data survives only with a `location`)."""
        self.stop()
        time.sleep(down_seconds)
        self.start()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The Node process's id while it runs (None before start and after stop)."""
        return self._process.pid if self._process is not None else None

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
