"""Run a script the way a Hub user without this package would: a fresh process, another working
directory, `modeling_omnidrca` unimportable, only `trust_remote_code` to find the code."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

BLOCK_PACKAGE = textwrap.dedent(
    """
    import importlib.abc, sys

    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "modeling_omnidrca":
                raise ImportError("modeling_omnidrca is blocked in this process")

    sys.meta_path.insert(0, _Block())
    """
)


def run_without_package(script: str, args: list[str], workdir: Path) -> str:
    """Run `script` (with `args` as sys.argv[1:]) in `workdir`; fail the test with its stderr if it fails.
    Returns its stdout."""
    (workdir / "remote.py").write_text(BLOCK_PACKAGE + textwrap.dedent(script))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(workdir / "modules"))
    proc = subprocess.run([sys.executable, "remote.py", *map(str, args)], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout
