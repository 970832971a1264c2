"""Rewrites run records (run_config.json) written by an earlier vanish in today's config layout.

    python scripts/migrate_records.py docs/grid            # every record under the folder
    python scripts/migrate_records.py runs/a runs/b --check  # list what would change only

A record of an earlier layout (the flat field names of the first versions, or sections with
fields since moved, e.g. topology.degree -> topology_args.random_regular.degree) is read
through vanish.compat.upgrade and written back nested in today's sections, every field
present. The old config hash stays accepted (`accepts`), so a workdir with checkpoints still
resumes from them. Fields vanish does not know (added by hand) are kept. Running it again
changes nothing. vanish reads old records without this (a workdir resumes, results tables
group them); the script is for archives kept in a repository, so that they read as today's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from vanish import compat, config, workdir


def migrate(file: Path) -> dict[str, Any] | None:
    """Today's record for `file` (None: it is already in today's layout)."""
    stored = json.loads(file.read_text())
    cfg = stored["config"]
    flat = cfg if stored.get("schema", 1) == 1 else workdir.flatten(cfg)
    upgraded = compat.upgrade(flat, keep_unknown=True)
    if stored.get("schema", 1) == workdir.SCHEMA_VERSION and flat == upgraded:
        return None
    digest = workdir.config_hash(upgraded, config.RESULT_NEUTRAL | config.idle_knobs(upgraded))
    accepts = sorted({str(stored.get("config_hash")), *map(str, stored.get("accepts", []))}
                     - {digest, "None"})
    return dict(schema=workdir.SCHEMA_VERSION, config_hash=digest, accepts=accepts,
                config=workdir.unflatten(upgraded))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+", type=Path)
    p.add_argument("--check", action="store_true", help="list the records to rewrite only")
    args = p.parse_args(argv)
    files = sorted(f for d in args.folders for f in Path(d).rglob(workdir.CONFIG_FILE))
    if not files:
        print(f"no {workdir.CONFIG_FILE} under {', '.join(map(str, args.folders))}",
              file=sys.stderr)
        return 1
    changed = 0
    for f in files:
        new = migrate(f)
        if new is None:
            continue
        changed += 1
        if args.check:
            print(f)
        else:
            f.write_text(json.dumps(new, indent=1, default=str) + "\n")
    verb = "to rewrite" if args.check else "rewritten"
    print(f"{changed} of {len(files)} records {verb} in today's layout")
    return 0


if __name__ == "__main__":
    sys.exit(main())
