"""--json FILE for every command that reports: written under a temporary name and renamed, so a reader never
sees half a report."""
from __future__ import annotations

import json
import os


def write_json(path: str, data) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=1)
    os.replace(tmp, path)
    print(f"wrote {path}")
