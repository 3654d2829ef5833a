"""What `make dev` keeps between runs in `.state/dev/stack.json`: ports, URLs, the storage path,
where the customer's push token and the read API's admin token are.

A second run finds the same ports (so the URLs printed last time still work), and the central
storage path the state was created with: a state created on plain PostgreSQL stays plain even
after TimescaleDB is installed on the machine, since converting the central table is a manual
migration. The URLs are saved so a developer can reach each piece without reading old output.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fleetdev.pgcluster import free_port

__all__ = ["StackState"]


@dataclass
class StackState:
    """The dev stack's state folder and what `stack.json` holds."""

    root: Path
    customer_port: int
    central_port: int
    ingest_port: int
    customer_url: str | None = None
    central_url: str | None = None
    ingest_url: str | None = None
    central_storage: str | None = None  # what `ingestd migrate` reported: timescaledb or postgresql

    @classmethod
    def load(cls, root: Path) -> StackState:
        """The saved state, or new free ports for a first run (saved at once)."""
        root.mkdir(parents=True, exist_ok=True)
        path = root / "stack.json"
        if path.exists():
            data: dict[str, Any] = json.loads(path.read_text())
            known = {k: data[k] for k in cls.__dataclass_fields__ if k in data and k != "root"}
            return cls(root, **known)
        state = cls(root, free_port(), free_port(), free_port())
        state.save()
        return state

    def save(self) -> None:
        data = {k: v for k, v in asdict(self).items() if k != "root"}
        data["token_file"] = str(self.token_file)
        data["admin_token_file"] = str(self.admin_token_file)
        data["logs"] = str(self.logs)
        path = self.root / "stack.json"
        path.write_text(json.dumps(data, indent=2) + "\n")
        path.chmod(0o600)  # the TimescaleDB container's URL carries its password

    @property
    def token_file(self) -> Path:
        return self.root / "DEV0001.token"

    @property
    def admin_token_file(self) -> Path:
        """The read API's bearer token (INGESTD_ADMIN_TOKEN) when the developer set none."""
        return self.root / "admin.token"

    @property
    def logs(self) -> Path:
        return self.root / "logs"
