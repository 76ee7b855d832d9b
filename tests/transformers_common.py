"""transformers' own common model tests, for the installed transformers version.

The common test modules (`test_modeling_common.py`, `test_configuration_common.py`, `test_processing_common.py`,
the feature-extraction ones) are not in the transformers wheel but are in its PyPI sdist, so they are fetched
from the registry (`pip download --no-binary`) for exactly the installed version and cached. A few helper modules
they import are in neither; this project's own stand-ins for them, in `tests/transformers_helpers/` (see its
README), are laid beside them. The result is importable as the package `transformers_tests`:

    from transformers_common import import_common
    common = import_common("test_modeling_common")

Nothing is skipped when the download fails: the suite must test against the version it runs on.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import transformers

HELPERS = Path(__file__).resolve().parent / "transformers_helpers"
PACKAGE = "transformers_tests"


def _cache_root() -> Path:
    base = os.environ.get("OMNIDRCA_TRANSFORMERS_TESTS_CACHE") or Path.home() / ".cache" / "omnidrca" / "transformers-tests"
    return Path(base) / transformers.__version__


def _fetch_sdist_tests(package_dir: Path) -> None:
    """Download the installed version's sdist and unpack its top-level `tests/*.py` into `package_dir`."""
    version = transformers.__version__
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet",
                   f"transformers=={version}", "-d", tmp]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True)
        archives = list(Path(tmp).glob("transformers-*.tar.gz"))
        if done.returncode != 0 or not archives:
            raise RuntimeError(
                f"Could not download the transformers {version} sdist for its common tests "
                f"(`{' '.join(command)}` exited {done.returncode}):\n{done.stderr[-2000:]}"
            )
        staging = Path(tmp) / PACKAGE
        staging.mkdir()
        with tarfile.open(archives[0]) as archive:
            for member in archive.getmembers():
                parts = Path(member.name).parts  # ("transformers-X", "tests", "test_x.py")
                if len(parts) == 3 and parts[1] == "tests" and parts[2].endswith(".py") and member.isfile():
                    (staging / parts[2]).write_bytes(archive.extractfile(member).read())
        if not (staging / "test_modeling_common.py").is_file():
            raise RuntimeError(f"The transformers {version} sdist has no tests/test_modeling_common.py.")
        package_dir.parent.mkdir(parents=True, exist_ok=True)
        if not package_dir.exists():
            shutil.move(str(staging), str(package_dir))


def _lay_helpers(root: Path, package_dir: Path) -> None:
    """Copy the helper modules where the common modules import them from (fresh on every run)."""
    for source in HELPERS.rglob("*.py"):
        relative = source.relative_to(HELPERS)
        # `utils/fetch_hub_objects_for_ci.py` lives in the repository's top-level utils/, which
        # test_processing_common puts on sys.path; the others are subpackages of tests/.
        if relative.parts[0] == "repo_utils":
            target = root / "utils" / relative.relative_to("repo_utils")
        else:
            target = package_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if relative.parts[0] != "repo_utils":  # subpackages of tests/: each folder needs its __init__.py
            for parent in target.relative_to(package_dir).parents:
                (package_dir / parent / "__init__.py").touch()
        shutil.copyfile(source, target)


def import_common(module: str):
    """Import `transformers_tests.<module>` (e.g. "test_modeling_common") for the installed transformers."""
    root = _cache_root()
    package_dir = root / PACKAGE
    if not (package_dir / "test_modeling_common.py").is_file():
        _fetch_sdist_tests(package_dir)
    (package_dir / "__init__.py").touch()
    _lay_helpers(root, package_dir)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module(f"{PACKAGE}.{module}")
