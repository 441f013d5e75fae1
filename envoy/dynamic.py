#!/usr/bin/env python3
"""Hot reload: a static Envoy config split into a bootstrap with file-based dynamic resources
(LDS and CDS from a watched directory) and the resource files, rewritten atomically.

    python envoy/dynamic.py envoy/stack.yaml .run/envoy   # write bootstrap.yaml, lds.yaml, cds.yaml

The bootstrap keeps everything but the listeners and clusters (admin, stats_config, ...) and
points `dynamic_resources.lds_config` / `cds_config` at `<dir>/lds.yaml` / `<dir>/cds.yaml`
with `watched_directory: <dir>`. Envoy reloads a resource file when a file is *moved* into that
directory, so `write_resources` writes each file under a temporary name in the same directory
and renames it into place (never a partial file). A changed listener (e.g. a new wasm plugin
configuration) replaces the old one in place: connections on the old filter chain drain (open
streams complete), new connections get the new configuration. Wasm shared-data counters live
per `vm_id` in the Envoy process and survive; fleet counters live in Redis anyway.

`examples/run_stack.py` (`make run`) uses it to pick up edits to envoy/stack.yaml (or to
envoy/llm.yaml, mcp.yaml, a2a.yaml, which it composes into stack.yaml first) without a restart.
Changes outside listeners and clusters (admin, stats_config, bootstrap flags) need a restart.
"""
from __future__ import annotations

import copy
import os
import sys
import tempfile
from pathlib import Path

import yaml

LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"


def _source(path: Path, directory: Path) -> dict:
    return {"path_config_source": {"path": str(path), "watched_directory": {"path": str(directory)}},
            "resource_api_version": "V3"}


def bootstrap(cfg: dict, directory: Path) -> dict:
    """The bootstrap of `cfg` with its listeners and clusters moved to LDS/CDS files in `directory`."""
    directory = Path(directory).resolve()
    out = copy.deepcopy(cfg)
    out.pop("static_resources", None)
    out.setdefault("node", {"id": "tollgate", "cluster": "tollgate"})
    out["dynamic_resources"] = {
        "lds_config": _source(directory / "lds.yaml", directory),
        "cds_config": _source(directory / "cds.yaml", directory),
    }
    return out


def resources(cfg: dict) -> dict[str, dict]:
    """{file name: discovery response} for the listeners and clusters of `cfg`."""
    static = cfg.get("static_resources", {})
    return {
        "lds.yaml": {"resources": [{"@type": LISTENER_TYPE, **l} for l in static.get("listeners", [])]},
        "cds.yaml": {"resources": [{"@type": CLUSTER_TYPE, **c} for c in static.get("clusters", [])]},
    }


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)  # a move into the watched directory: Envoy reloads `path`
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_resources(cfg: dict, directory: Path, only_changed: bool = True) -> list[str]:
    """Writes lds.yaml and cds.yaml (CDS first: a new listener may need a new cluster);
    returns the names of the files written (unchanged ones are skipped)."""
    directory = Path(directory)
    written = []
    res = resources(cfg)
    for name in ("cds.yaml", "lds.yaml"):
        text = yaml.safe_dump(res[name], sort_keys=False)
        path = directory / name
        if only_changed and path.exists() and path.read_text() == text:
            continue
        _atomic_write(path, text)
        written.append(name)
    return written


def write_all(cfg: dict, directory: Path) -> Path:
    """Writes the resource files and the bootstrap; returns the bootstrap's path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_resources(cfg, directory, only_changed=False)
    path = directory / "bootstrap.yaml"
    _atomic_write(path, yaml.safe_dump(bootstrap(cfg, directory), sort_keys=False))
    return path


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    cfg = yaml.safe_load(Path(sys.argv[1]).read_text())
    print(write_all(cfg, Path(sys.argv[2])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
