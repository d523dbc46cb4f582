"""A restored trial that names a deleted checkpoint is pointed at the newest one on storage."""
import pyarrow.fs as pafs
from ray.train._internal.session import _TrainingResult
from ray.tune import Checkpoint

from studies.recovery import repair_checkpoint


class FakeTrial:  # only what repair_checkpoint reads: Tune's latest checkpoint result and the id
    trial_id = "abc"

    def __init__(self, result):
        self.latest_checkpoint_result = result


def test_missing_checkpoint_is_replaced_by_the_newest_stored_one(tmp_path, capsys):
    trial_dir = tmp_path / "trial-abc"
    for name in ("checkpoint_000001", "checkpoint_000003", "checkpoint_000002"):
        (trial_dir / name).mkdir(parents=True)
    (trial_dir / "result.json").write_text("{}")
    fs = pafs.LocalFileSystem()
    stale = _TrainingResult(Checkpoint(str(trial_dir / "checkpoint_000000"), filesystem=fs), {"step": 10})
    assert repair_checkpoint(FakeTrial(stale))
    assert stale.checkpoint.path == str(trial_dir / "checkpoint_000003") and stale.metrics == {"step": 10}
    assert "trial abc: its saved state names a deleted checkpoint; resuming from checkpoint_000003" in capsys.readouterr().err


def test_existing_or_absent_checkpoints_are_left_alone(tmp_path):
    fs = pafs.LocalFileSystem()
    (tmp_path / "checkpoint_000001").mkdir()
    (tmp_path / "checkpoint_000002").mkdir()
    present = _TrainingResult(Checkpoint(str(tmp_path / "checkpoint_000001"), filesystem=fs), {})
    assert not repair_checkpoint(FakeTrial(present)) and present.checkpoint.path.endswith("checkpoint_000001")
    assert not repair_checkpoint(FakeTrial(None))
    lonely = tmp_path / "empty" / "checkpoint_000000"
    (tmp_path / "empty").mkdir()
    gone = _TrainingResult(Checkpoint(str(lonely), filesystem=fs), {})
    assert not repair_checkpoint(FakeTrial(gone)) and gone.checkpoint.path == str(lonely)
