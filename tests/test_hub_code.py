"""One source of code: every Hub-style folder the repo ships runs the package's code (`modeling_omnidrca.hub_code`)."""

import shutil
from pathlib import Path

import pytest

from modeling_omnidrca import hub_code

REPO = Path(__file__).resolve().parents[1]
# Every folder a user can load with trust_remote_code: the shipped checkpoints and the test fixtures.
HUB_FOLDERS = sorted(p.parent for p in [*REPO.glob("checkpoints/*/config.json"), *REPO.glob("tests/fixtures/*/config.json")])


def test_the_repo_ships_the_expected_hub_folders():
    names = {p.name for p in HUB_FOLDERS}
    assert {"omnidrca-demo", "omnidrca-demo-diffusion", "tiny-random-omnidrca"} <= names


@pytest.mark.parametrize("folder", HUB_FOLDERS, ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_folder_carries_the_package_code(folder):
    # trust_remote_code runs the folder's copy: a stale copy means users run code the suite never tested.
    # Fix with `python -m modeling_omnidrca.hub_code refresh <folder>`.
    assert hub_code.stale_code_files(folder) == []
    required = hub_code.required_code_files(folder)
    assert {"modeling_omnidrca.py", "configuration_omnidrca.py", "processing_omnidrca.py"} <= set(required)
    for name in required:
        assert (folder / name).read_bytes() == (REPO / "modeling_omnidrca" / name).read_bytes(), name


def test_required_files_follow_relative_imports():
    # The model module imports its heads, the codec and the stream layout relatively; all must travel with it.
    required = set(hub_code.required_code_files(REPO / "tests" / "fixtures" / "tiny-random-omnidrca"))
    modeling = (REPO / "modeling_omnidrca" / "modeling_omnidrca.py").read_text()
    for line in modeling.splitlines():
        if line.startswith("from .") and " import " in line:
            assert line.split()[1][1:] + ".py" in required, line
    # Tools that never ship with a checkpoint stay out; the Whisper converter ships, as parts-only checkpoints
    # rebuild their speech encoder with it (`pretrained_sources`, source `whisper-tiny.en`).
    assert not {"__init__.py", "__main__.py", "hub_code.py"} & required
    assert {"assembly.py", "pretrained_sources.py", "convert_ct2_whisper.py"} <= required


def test_refresh_repairs_a_stale_copy_and_drops_leftovers(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(REPO / "tests" / "fixtures" / "tiny-random-omnidrca", folder)
    (folder / "modeling_omnidrca.py").write_text("# an old copy\n")
    (folder / "streams.py").unlink()
    (folder / "hub_code.py").write_text("# a package file the folder does not need\n")
    weights = (folder / "model.safetensors").read_bytes()

    assert hub_code.stale_code_files(folder) == ["hub_code.py", "modeling_omnidrca.py", "streams.py"]
    assert hub_code.main(["check", str(folder)]) == 1
    assert hub_code.refresh_code_files(folder) == ["hub_code.py", "modeling_omnidrca.py", "streams.py"]
    assert hub_code.stale_code_files(folder) == []
    assert hub_code.main(["check", str(folder)]) == 0
    assert not (folder / "hub_code.py").exists()
    assert (folder / "model.safetensors").read_bytes() == weights  # code only


def test_unknown_auto_map_module_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text('{"auto_map": {"AutoModel": "modeling_elsewhere.Model"}}')
    with pytest.raises(ValueError, match="modeling_elsewhere"):
        hub_code.required_code_files(tmp_path)
