"""Nothing outside `<storage>/<name>` is ever written or deleted: sentinel files around the storage root
survive every command that writes or deletes (run, run --fresh, report, status, denoise), and names or
folders that would reach outside are refused with one line and exit 2."""
from __future__ import annotations

import json
import os

import pytest
import yaml

from tests.conftest import DATA, cli


def _tree(root) -> dict[str, str]:
    """Every file under `root` (relative path -> content), to compare before and after."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = open(p, "rb").read().decode("latin-1")
    return out


@pytest.fixture
def guarded(tmp_path):
    """A storage root with another study, a user's notes beside it, and a file beside the root itself."""
    storage = tmp_path / "studies"
    (storage / "other_study").mkdir(parents=True)
    (storage / "other_study" / "study.json").write_text(json.dumps({"spec": {"name": "other_study"}}))
    (storage / "notes.txt").write_text("my notes")
    (tmp_path / "beside-the-root.txt").write_text("keep me")
    return tmp_path, storage


def _spec_named(tmp_path, name) -> str:
    spec = yaml.safe_load((DATA / "tiny.yaml").read_text())
    spec["name"] = name
    path = tmp_path / "named.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


@pytest.mark.parametrize("name", [".", "..", "a/b", "../escape", ".hidden", "", "x" * 101, "/abs"])
def test_a_study_name_that_reaches_outside_its_folder_is_refused(guarded, name):
    top, storage = guarded
    before = _tree(top)
    for fresh in ([], ["--fresh"]):
        code, out, err = cli("run", _spec_named(top, name), "--storage", str(storage), "--budget", "smoke", *fresh)
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
        assert "name" in err, err
    after = _tree(top)
    after.pop("named.yaml")
    before.pop("named.yaml", None)
    assert after == before  # nothing written, nothing deleted


@pytest.mark.parametrize("command", [["status"], ["report"]])
@pytest.mark.parametrize("name", ["..", ".", "a/../other_study"])
def test_reading_commands_refuse_names_outside_the_storage(guarded, command, name):
    top, storage = guarded
    before = _tree(top)
    code, _, err = cli(*command, name, "--storage", str(storage))
    assert code == 2 and err.count("\n") == 1, err
    assert _tree(top) == before


def test_fresh_refuses_a_folder_that_is_not_a_study(guarded):
    """A user's own folder that happens to carry the study's name is never emptied by --fresh."""
    top, storage = guarded
    (storage / "tiny").mkdir()
    (storage / "tiny" / "thesis.tex").write_text("years of work")
    before = _tree(top)
    code, _, err = cli("run", str(DATA / "tiny.yaml"), "--storage", str(storage), "--budget", "smoke", "--fresh")
    assert code == 2 and "is not a study folder" in err and "nothing was deleted" in err, err
    assert _tree(top) == before


def test_clear_study_empties_only_its_own_study_folder(guarded):
    from studies.store import UnsafeStudyPath, clear_study

    top, storage = guarded
    sdir = storage / "mine"
    (sdir / "records").mkdir(parents=True)
    (sdir / "study.json").write_text(json.dumps({"spec": {"name": "mine"}}))
    (sdir / "records" / "t1.json").write_text("{}")
    (sdir / "driver.lock").write_text("{}")
    others = _tree(storage / "other_study") | {"notes": (storage / "notes.txt").read_text()}
    clear_study(sdir)
    assert sorted(p.name for p in sdir.iterdir()) == ["driver.lock"]
    assert _tree(storage / "other_study") | {"notes": (storage / "notes.txt").read_text()} == others
    # a study.json that names another study is not this folder's marker
    (sdir / "study.json").write_text(json.dumps({"spec": {"name": "other_study"}}))
    with pytest.raises(UnsafeStudyPath, match="not a study folder"):
        clear_study(sdir)
    assert (sdir / "study.json").exists()


def test_a_study_folder_that_is_a_symlink_out_of_the_root_is_refused(guarded):
    from studies.store import UnsafeStudyPath, study_dir

    top, storage = guarded
    (storage / "linked").symlink_to(top)
    with pytest.raises(UnsafeStudyPath, match="does not resolve to a folder inside"):
        study_dir(str(storage), "linked")
    assert study_dir(str(storage), "fine") == storage / "fine"


def test_run_and_fresh_rerun_write_and_delete_only_inside_the_study(tiny_race, ray_cluster, tmp_path):
    """A real study through Ray (two drivers raced for it), then, on a copy, the same with --fresh: outside
    <storage>/tiny every file is as it was; inside, the rerun starts over."""
    import shutil

    outside = {str(k): v for k, v in tiny_race.before.items() if not str(k).startswith("studies/tiny/")}
    now = {k: v.encode("latin-1") for k, v in _tree(tiny_race.top).items() if not k.startswith("studies/tiny/")}
    assert now == outside  # the run wrote nothing outside its study
    top = tmp_path / "copy"
    shutil.copytree(tiny_race.top, top)
    storage = top / "studies"
    first = json.loads((storage / "tiny" / "study.json").read_text())["runs"][0]["start"]
    code, out, err = cli("run", str(DATA / "tiny.yaml"), "--budget", "smoke", "--storage", str(storage),
                         "--address", ray_cluster.address, "--quiet", "--fresh")
    assert code == 0, out + err
    runs = json.loads((storage / "tiny" / "study.json").read_text())["runs"]
    assert len(runs) == 1 and runs[0]["start"] > first  # started over, not resumed
    code, _, _ = cli("report", "tiny", "--storage", str(storage))
    assert code == 0
    after = {k: v.encode("latin-1") for k, v in _tree(top).items() if not k.startswith("studies/tiny/")}
    assert after == outside
