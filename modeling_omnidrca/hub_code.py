"""One source of code: the `trust_remote_code` files of a Hub-style folder are copies of this package's.

`save_pretrained` copies the code next to the weights, and `trust_remote_code=True` runs that copy, not the
installed package. A folder saved months ago therefore runs months-old code. This module finds which package
files a folder needs (the modules its `auto_map` entries name, and everything they import relatively) and
refreshes or checks the copies:

    python -m modeling_omnidrca.hub_code check checkpoints/* tests/fixtures/tiny-random-omnidrca
    python -m modeling_omnidrca.hub_code refresh checkpoints/omnidrca-demo

Only code is touched; weights, configs and tokenizers are left as they are.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import shutil
import sys
from pathlib import Path

from transformers.dynamic_module_utils import get_relative_import_files

PACKAGE_DIR = Path(__file__).resolve().parent
# Files whose `auto_map` names the code a folder runs (the processor's sub-configs nest theirs).
_AUTO_MAP_FILES = ("config.json", "processor_config.json", "preprocessor_config.json", "tokenizer_config.json")


def _auto_map_modules(node) -> set[str]:
    """Module names (`"modeling_omnidrca"`) of every `auto_map` entry in a JSON tree."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "auto_map" and isinstance(value, dict):
                for target in value.values():
                    for ref in target if isinstance(target, (list, tuple)) else [target]:
                        if isinstance(ref, str):
                            found.add(ref.split("--")[-1].rsplit(".", 1)[0])
            else:
                found |= _auto_map_modules(value)
    elif isinstance(node, list):
        for value in node:
            found |= _auto_map_modules(value)
    return found


def required_code_files(folder: str | Path) -> list[str]:
    """The package files (names) that `trust_remote_code` loading of `folder` imports."""
    folder = Path(folder)
    modules: set[str] = set()
    for name in _AUTO_MAP_FILES:
        if (folder / name).is_file():
            modules |= _auto_map_modules(json.loads((folder / name).read_text()))
    files: set[str] = set()
    for module in sorted(modules):
        source = PACKAGE_DIR / f"{module}.py"
        if not source.is_file():
            raise ValueError(
                f"{folder}: its auto_map names the module {module!r}, which this package does not have "
                f"(expected {source}). Re-save the folder with `save_pretrained` from the current package."
            )
        files.add(source.name)
        files |= {Path(p).name for p in get_relative_import_files(str(source))}
    return sorted(files)


def stale_code_files(folder: str | Path) -> list[str]:
    """Names of the code files in `folder` that are missing, differ from the package, or are left over."""
    folder = Path(folder)
    required = required_code_files(folder)
    stale = [n for n in required if not (folder / n).is_file() or not filecmp.cmp(folder / n, PACKAGE_DIR / n, False)]
    package_files = {p.name for p in PACKAGE_DIR.glob("*.py")}
    leftover = [p.name for p in folder.glob("*.py") if p.name in package_files and p.name not in required]
    return sorted(stale + leftover)


def refresh_code_files(folder: str | Path) -> list[str]:
    """Copy the package's code into `folder` (and drop copies it no longer needs); returns the changed names."""
    folder = Path(folder)
    changed = stale_code_files(folder)
    required = set(required_code_files(folder))
    for name in changed:
        if name in required:
            shutil.copyfile(PACKAGE_DIR / name, folder / name)
        else:
            (folder / name).unlink()
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("check", "refresh"))
    parser.add_argument("folders", nargs="+", type=Path, help="Hub-style folders (with config.json and auto_map)")
    args = parser.parse_args(argv)
    failed = False
    for folder in args.folders:
        if not (folder / "config.json").is_file():
            print(f"{folder}: skipped (no config.json; an adapter or not a model folder)")
            continue
        if args.action == "refresh":
            changed = refresh_code_files(folder)
            print(f"{folder}: {'refreshed ' + ', '.join(changed) if changed else 'already current'}")
        else:
            stale = stale_code_files(folder)
            failed |= bool(stale)
            print(f"{folder}: {'STALE ' + ', '.join(stale) if stale else 'current'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
