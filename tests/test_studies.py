"""Studies through the real CLI on a real Ray cluster (two local nodes on loopback)."""
import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from tests.conftest import DATA, cli, cli_process, ray_env

pytestmark = pytest.mark.ray


def test_smoke_n2n_loss_runs_the_planned_trials(n2n_smoke):
    sdir, out = n2n_smoke
    df = pd.read_parquet(sdir / "trials.parquet")
    assert len(df) == 15 * (1 + 2)  # 5 noises x 3 losses, 1 tuning trial + 2 confirm seeds each
    assert set(df.status) == {"completed"}
    per_cell = df.groupby(["cell", "phase"]).size().unstack()
    assert (per_cell["tune"] == 1).all() and (per_cell["confirm"] == 2).all() and len(per_cell) == 15
    confirm = df[df.phase == "confirm"]
    assert not confirm.duplicated(["cell", "seed"]).any() and set(confirm.seed) == {1000, 1001}
    # the confirm runs use the cell's tuned learning rate, never a factor chosen by the optimiser
    for cell, g in df.groupby("cell"):
        assert g["param.lr"].nunique() == 1
        noise, loss = cell.split(",")
        assert (g["factor.noise"] == noise.split("=")[1]).all() and (g["factor.loss"] == loss.split("=")[1]).all()
    assert df["final.psnr"].notna().all() and df["final.input_psnr"].notna().all()
    for best in (sdir / "best").iterdir():
        ckpt = torch.load(best / "model.pt", weights_only=True)
        assert ckpt["config"]["target"] == "noisy" and ckpt["state_dict"]
    assert len(list((sdir / "best").iterdir())) == 15
    assert f"report: {sdir / 'report.html'}" in out and (sdir / "report.html").exists()


def test_optuna_storage_holds_one_study_per_cell(n2n_smoke):
    """A new study's Optuna studies are in its journal file (Optuna's JournalStorage), one per cell, as study.json
    says; Optuna itself opens it."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    sdir, _ = n2n_smoke
    assert json.loads((sdir / "study.json").read_text())["optuna_storage"] == f"journal:{sdir / 'optuna.journal'}"
    assert not (sdir / "optuna.db").exists()
    summaries = optuna.get_all_study_summaries(JournalStorage(JournalFileBackend(str(sdir / "optuna.journal"))))
    assert len(summaries) == 15 and all(s.n_trials == 1 for s in summaries)


def test_a_study_stored_with_sqlite_resumes_and_reports_from_its_own_storage(tmp_path):
    """A study started before the journal (optuna.db, named in its study.json) keeps that storage on a resume and in
    its report's tuning figures."""
    from studies.store import default_optuna_storage, open_optuna_storage
    from studies.documents import StudyInfo

    sdir = tmp_path / "old"
    sdir.mkdir()
    url = f"sqlite:///{sdir / 'optuna.db'}"
    StudyInfo(optuna_storage=url).write(sdir / "study.json")
    assert default_optuna_storage(sdir) == url
    assert default_optuna_storage(tmp_path / "new") == f"journal:{tmp_path / 'new' / 'optuna.journal'}"
    import optuna

    optuna.create_study(study_name="old:a", storage=open_optuna_storage(url)).optimize(lambda t: t.suggest_float("x", 0, 1), 2)
    assert len(optuna.load_study(study_name="old:a", storage=open_optuna_storage(url)).trials) == 2


def test_status_reports_every_cell(n2n_smoke):
    sdir, _ = n2n_smoke
    code, out, _ = cli("status", "n2n_loss", "--storage", str(sdir.parent))
    assert code == 0 and "45/45 trials finished" in out and out.count("3/3") == 15


def test_denoise_applies_best_model_to_png(n2n_smoke, tmp_path):
    sdir, _ = n2n_smoke
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (37, 53), dtype=np.uint8)).save(tmp_path / "in.png")
    code, out, err = cli("denoise", "--study", "n2n_loss", "--storage", str(sdir.parent),
                         "--cell", "noise=gaussian,loss=l2", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"))
    assert code == 0, err
    assert Image.open(tmp_path / "out.png").size == (53, 37) and Image.open(tmp_path / "out.png").mode == "L"
    assert "model of cell noise=gaussian, loss=l2" in out
    code, _, err = cli("denoise", "--study", "n2n_loss", "--storage", str(sdir.parent), "--cell", "noise=speckle,loss=l2",
                       str(tmp_path / "in.png"), "-o", str(tmp_path / "x.png"))
    assert code == 2 and "unknown cell 'noise=speckle,loss=l2'" in err and not (tmp_path / "x.png").exists()


def test_denoise_picks_the_best_model_for_the_named_noise_and_keeps_colour(n2n_smoke, tmp_path):
    sdir, _ = n2n_smoke
    args = ("denoise", "--study", "n2n_loss", "--storage", str(sdir.parent))
    rgb = np.random.default_rng(1).integers(0, 255, (24, 40, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    # several noises and no choice: ask, listing the cells; nothing written
    code, _, err = cli(*args, str(tmp_path / "rgb.png"), "-o", str(tmp_path / "x.png"))
    assert code == 2 and "trained on several noises" in err and "--noise" in err and err.count("\n") == 1
    assert not (tmp_path / "x.png").exists()
    code, out, err = cli(*args, "--noise", "impulse", str(tmp_path / "rgb.png"), "-o", str(tmp_path / "out.png"))
    assert code == 0, err
    from studies.documents import BestTrial

    best = {b.cell: b.score("psnr") for b in map(BestTrial.read, sdir.glob("best/*/trial.json"))}
    assert all(b.metric == "psnr" for b in map(BestTrial.read, sdir.glob("best/*/trial.json")))
    impulse = max((c for c in best if c.startswith("noise=impulse,")), key=best.get)
    assert f"model of cell {impulse.replace(',', ', ')}" in out
    got = Image.open(tmp_path / "out.png")
    assert got.mode == "RGB" and got.size == (40, 24)  # RGB in, RGB out: each channel denoised on its own
    arr = np.asarray(got)
    assert (arr[..., 0] != arr[..., 1]).any()  # not a gray image copied into three channels
    code, _, err = cli(*args, "--noise", "speckle", str(tmp_path / "rgb.png"), "-o", str(tmp_path / "y.png"))
    assert code == 2 and "no cell of study 'n2n_loss' was trained on noise 'speckle'" in err


def _bomb(path, w=30000, h=30000):
    """A w x h one-bit PNG: under 1 MB on disk, 900 megapixels once decoded at the default size."""
    import zlib

    row = b"\x00" + bytes(w // 8)
    raw = zlib.compress(row * h, 9)

    def chunk(kind, data):
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b""))
    return path


def _truncated(path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:200])
    return path


@pytest.mark.parametrize("make,needle", [
    (_bomb, "could be decompression bomb"),  # refused by Pillow from the header
    (lambda p: _bomb(p, 10000, 10000), "10000x10000 pixels is more than the 64 megapixels allowed"),
    (_truncated, "cannot read image"),
    (lambda p: p.write_text("not an image") and p, "cannot identify image file"),
], ids=["decompression-bomb", "oversized", "truncated", "not-an-image"])
def test_denoise_refuses_bad_images_with_one_line(n2n_smoke, tmp_path, make, needle):
    sdir, _ = n2n_smoke
    bad = make(tmp_path / "in.png")
    assert bad.stat().st_size < 2**20
    code, out, err = cli("denoise", "--study", "n2n_loss", "--storage", str(sdir.parent), "--noise", "gaussian",
                         str(bad), "-o", str(tmp_path / "out" / "x.png"))
    assert code == 2 and needle in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()  # nothing written


def _overlaps(recs: pd.DataFrame) -> int:
    iv = sorted(zip(recs.start, recs.end))
    return sum(1 for (s1, e1), (s2, e2) in zip(iv, iv[1:]) if s2 < e1)


def _wait_finished(records, n: int, proc, limit: float = 300) -> None:
    """Until `n` trial records are finished (completed or stopped); the driver must still run."""
    deadline = time.time() + limit
    while time.time() < deadline:
        done = [p for p in records.glob("*.json") if '"status": "completed"' in p.read_text()
                or '"status": "stopped"' in p.read_text()] if records.exists() else []
        if len(done) >= n:
            return
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.3)
    raise AssertionError(f"fewer than {n} trials finished in {limit} s")


def _answer(sdir) -> tuple[list, dict]:
    """What a study answered: each trial's place, parameters, seed and status, and each confirm run's test score."""
    df = pd.read_parquet(sdir / "trials.parquet")
    rows = df.to_dict("records")
    plan = sorted((r["cell"], r["phase"], r["seed"], r["params"], r["status"]) for r in rows)
    scores = {(r["cell"], r["seed"]): round(r["final.test_psnr"], 3) for r in rows if r["phase"] == "confirm"}
    return plan, scores


def test_a_driver_killed_twice_resumes_to_the_same_answer_with_parallel_tuning(tmp_path):
    """tests/data/waves.yaml tunes each cell in waves of q=2 (4 slots on 2 CPUs: a cell's wave runs at once). SIGKILL
    the driver (a local Ray of its own) at two points; the same command resumes each time and ends with the same
    trials, parameters, early-stopping decisions and confirm scores as the same study run uninterrupted."""
    from studies.runlog import HEARTBEAT_S

    env = ray_env(TUNE_GLOBAL_CHECKPOINT_S="1")
    # a first `denoise-study run` on a machine where Ray never ran: its default temp dir does not exist yet
    assert not (Path(env["RAY_TMPDIR"]) / "ray").exists()
    whole = cli_process("run", str(DATA / "waves.yaml"), "--budget", "smoke", "--storage", str(tmp_path / "whole"),
                        env=env)
    out, _ = whole.communicate(timeout=400)
    assert whole.returncode == 0, out
    assert "tuning: 2 cells x q=2: at most 4 trials at once on 4 slots" in out
    reference = _answer(tmp_path / "whole" / "waves")
    ref = pd.read_parquet(tmp_path / "whole" / "waves" / "trials.parquet")
    # parallel tuning is real: two tuning trials of one cell ran at the same time
    assert max(_overlaps(g) for _, g in ref[ref.phase == "tune"].groupby("cell")) >= 1

    storage = tmp_path / "store"
    args = ("run", str(DATA / "waves.yaml"), "--budget", "smoke", "--storage", str(storage))
    records = storage / "waves" / "records"
    kills = []
    # mid-tuning (wave 0), among the first look's confirm runs, then in the wave the first look added (2 runs a side
    # give no interval: both cells get runs 3-4)
    for finished in (2, 7, 11):
        proc = cli_process(*args, env=env)
        _wait_finished(records, finished, proc)
        os.killpg(proc.pid, signal.SIGKILL)
        kills.append(time.time())
        proc.wait()
        code, status, _ = cli("status", "waves", "--storage", str(storage))
        assert "last run: killed" in status, status  # its pid is gone: not "running" for another minute
        time.sleep(1)
    code, _, err = cli("run", *args[1:], "--tune-parallel", "3")  # another q would sample other waves: refused
    assert code == 2 and "tunes in waves of q=2; this run asks for q=3" in err, err
    last = cli_process(*args, env=env)
    out, _ = last.communicate(timeout=400)
    assert last.returncode == 0, out
    assert "resuming waves" in out
    plan, scores = _answer(storage / "waves")
    # each killed run is closed at its last heartbeat (every 10 s), not when the next run or a report looked
    runs = json.loads((storage / "waves" / "study.json").read_text())["runs"]
    assert [r["ended"] for r in runs] == ["killed", "killed", "killed", "finished"], runs
    for run, killed_at in zip(runs, kills):
        assert killed_at - HEARTBEAT_S - 1 <= run["end"] <= killed_at
    html = (storage / "waves" / "report.html").read_text()
    assert "over 4 run(s)" in html and "killed" in html and "finished" in html
    assert json.loads((storage / "waves" / "looks.json").read_text())["continuing"] == [["loss=l1", "loss=l2"]]
    df = pd.read_parquet(storage / "waves" / "trials.parquet")
    assert df.groupby("phase").size().to_dict() == {"confirm": 8, "tune": 6}
    assert not df[df.phase == "confirm"].duplicated(["cell", "seed"]).any()
    assert set(df[df.phase == "confirm"].status) == {"completed"}  # confirm runs are never stopped early
    assert plan == reference[0]  # the same trials, parameters, seeds and early stops
    assert scores == reference[1]  # so the same confirm scores


def test_sigterm_and_sighup_are_interruptions_and_the_study_resumes_to_the_same_answer(tiny_race, tmp_path):
    """`kill -TERM` (Slurm, Kubernetes, systemd, a spot reclaim) and SIGHUP (a closed terminal) to a running driver:
    each stops it as Ctrl-C does (one line, exit 1, no Ray signal dump), `status` shows no running trial and the run
    log says interrupted; the same command then resumes to the uninterrupted run's answer."""
    reference = _answer(tiny_race.storage / "tiny")
    storage = tmp_path / "store"
    args = ("run", str(DATA / "tiny.yaml"), "--budget", "smoke", "--storage", str(storage))
    env = ray_env(TUNE_GLOBAL_CHECKPOINT_S="1")
    records = storage / "tiny" / "records"
    for finished, sig in ((2, signal.SIGTERM), (5, signal.SIGHUP)):
        proc = cli_process(*args, env=env)
        _wait_finished(records, finished, proc)
        os.kill(proc.pid, sig)  # the driver alone, as `kill -TERM PID` sends it
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 1, (sig, out)
        assert "interrupted; run the same command again to resume" in out, out
        assert "SIGTERM received" not in out and "PC: @" not in out and "Traceback" not in out, out
        code, status, _ = cli("status", "tiny", "--storage", str(storage))
        assert "last run: interrupted" in status and "running" not in status.split("last run:")[1], status
    runs = json.loads((storage / "tiny" / "study.json").read_text())["runs"]
    assert [r["ended"] for r in runs] == ["interrupted", "interrupted"], runs
    last = cli_process(*args, env=env)
    out, _ = last.communicate(timeout=400)
    assert last.returncode == 0 and "resuming tiny" in out, out
    assert "classical baselines: 1 setting(s) scored" in out  # never silent while the baselines finish
    assert _answer(storage / "tiny") == reference  # the same trials, parameters, stops and confirm scores
    html = (storage / "tiny" / "report.html").read_text()
    assert html.count("<td>interrupted</td>") == 2 and "<td>failed</td>" not in html


def test_address_spreads_trials_over_nodes(n2n_smoke, ray_cluster):
    """The smoke study ran with --address on the two-node cluster: its trials used both nodes."""
    sdir, _ = n2n_smoke
    df = pd.read_parquet(sdir / "trials.parquet")
    alive = {n["NodeID"] for n in __import__("ray").nodes() if n["Alive"]}
    assert df.node_id.nunique() >= 2 and set(df.node_id) <= alive


def test_two_drivers_started_together_run_the_study_once(tiny_race):
    """Both start within milliseconds on one storage: one runs the study, the other exits 2 naming it;
    no (cell, phase, seed) is run twice."""
    assert sorted(tiny_race.codes) == [0, 2], tiny_race.outs
    loser = tiny_race.outs[tiny_race.codes.index(2)]
    assert "is being run by another driver (host " in loser, loser
    df = pd.read_parquet(tiny_race.storage / "tiny" / "trials.parquet")
    assert len(df) == 8 and not df.duplicated(["cell", "phase", "seed"]).any()  # 2 cells x (2 tuning + 2 confirm)
    assert not (tiny_race.storage / "tiny" / "driver.lock").exists()  # released by the driver that ran


def test_a_task_added_in_one_file_runs_through_a_study_and_its_report(ray_cluster, tmp_path):
    """tests/toy_task.py is a whole task (deblurring) that nothing else in the project names; a spec selects it
    by module path, Ray's workers import it, and the report shows its metric and images."""
    code, out, err = cli("run", str(DATA / "toy.yaml"), "--budget", "smoke", "--storage", str(tmp_path),
                         "--address", ray_cluster.address, "--quiet")
    assert code == 0, out + err
    df = pd.read_parquet(tmp_path / "toy" / "trials.parquet")
    assert len(df) == 2 * (1 + 2) and set(df.status) == {"completed"}
    assert (df["final.psnr"] > 0).all() and df["final.test_psnr"].notna().sum() == 4  # confirm runs scored on test
    html = (tmp_path / "toy" / "report.html").read_text()
    assert "kernel=3" in html and "clean / blurred / restored" in html and html.count("(restored)") == 2
    # its own note and figure, through its hooks (tests/toy_task.py): the report names neither
    means = df[df.phase == "confirm"].groupby("factor.kernel")["final.test_psnr"].mean().rename(index=str)
    assert f"a 5x5 blur restores to {means['5']:.2f} dB, a 3x3 blur to {means['3']:.2f} dB" in html
    assert "restored PSNR against the blur kernel" in html
    # the task's metrics are known before anything runs: a metric it does not report is refused
    bad = (DATA / "toy.yaml").read_text().replace("metric: psnr", "metric: ssim")
    (tmp_path / "bad.yaml").write_text(bad)
    code, _, err = cli("run", str(tmp_path / "bad.yaml"), "--budget", "smoke", "--storage", str(tmp_path / "x"))
    assert code == 2 and "metric: task tests.toy_task does not report 'ssim'" in err and "it reports: psnr" in err
    assert not (tmp_path / "x").exists()


def test_denoise_keeps_bit_depth_grey_and_alpha_and_pads_tiny_images(n2n_smoke, tmp_path):
    """16-bit grey in, 16-bit grey out; grey+alpha and 1-bit stay grey; alpha is carried through unchanged; a 2x2
    image is padded (and says so); an unused flag is warned about; no directory is ever created."""
    sdir, _ = n2n_smoke
    rng = np.random.default_rng(0)
    base = ("denoise", "--study", "n2n_loss", "--storage", str(sdir.parent), "--noise", "gaussian")
    cases = {
        "g16.png": (Image.fromarray(rng.integers(0, 65535, (40, 48), dtype=np.uint16)), "I;16"),
        "la.png": (Image.fromarray(rng.integers(0, 255, (40, 48, 2), dtype=np.uint8), "LA"), "LA"),
        "rgba.png": (Image.fromarray(rng.integers(0, 255, (40, 48, 4), dtype=np.uint8), "RGBA"), "RGBA"),
        "bw.png": (Image.fromarray(rng.integers(0, 2, (40, 48), dtype=np.uint8).astype(bool)), "L"),
        "tiny.png": (Image.fromarray(rng.integers(0, 255, (2, 2), dtype=np.uint8)), "L"),
    }
    for name, (img, mode) in cases.items():
        img.save(tmp_path / name)
        code, out, err = cli(*base, str(tmp_path / name), "-o", str(tmp_path / f"out-{name}"))
        assert code == 0, err
        with Image.open(tmp_path / f"out-{name}") as res, Image.open(tmp_path / name) as src:
            assert res.mode == mode and res.size == src.size, (name, res.mode)
            if mode in ("LA", "RGBA"):
                assert np.array_equal(np.asarray(res.getchannel("A")), np.asarray(src.getchannel("A")))
            if mode == "I;16":
                assert np.asarray(res).max() > 255  # the output uses the 16-bit range
        assert ("padded by repeating its edge" in err) == (name == "tiny.png"), err
    code, _, err = cli(*base, "--sigma", "25", str(tmp_path / "la.png"), "-o", str(tmp_path / "s.png"))
    assert code == 0 and "warning: --sigma is not used" in err
    code, _, err = cli(*base, str(tmp_path / "la.png"), "-o", str(tmp_path / "no" / "dir" / "o.png"))
    assert code == 2 and "does not exist (it is not created)" in err and not (tmp_path / "no").exists()


def test_a_complete_study_run_on_other_data_is_refused(n2n_smoke):
    """Rerunning a complete study with another --dataset would rebuild its report and silently ignore the flag."""
    sdir, _ = n2n_smoke
    before = (sdir / "study.json").read_text()
    code, out, err = cli("run", "n2n_loss", "--budget", "smoke", "--storage", str(sdir.parent), "--dataset", "faces")
    assert code == 2 and err.count("\n") == 1, err
    assert "holds results on the spec's own data; this run asks for dataset=faces" in err and "--fresh" in err
    assert (sdir / "study.json").read_text() == before


def test_an_edited_yaml_is_taken_or_refused_never_ignored(n2n_smoke, tmp_path):
    """Rerunning a complete study from an edited YAML: keys that change no trial (references, description) are
    stored and the report rebuilt from them, with one line saying so; keys that change trials exit 2 naming them
    and the two ways on, and nothing is written."""
    import shutil

    import yaml

    from studies.spec import resolve

    sdir, _ = n2n_smoke
    storage = tmp_path / "store"
    shutil.copytree(sdir, storage / "n2n_loss")  # a copy: the shared study stays as it was
    raw = yaml.safe_load(resolve("n2n_loss").read_text())
    raw["description"] = "My own question about losses."
    raw["references"].append({"method": "Mine", "test_set": "natural", "noise": "gaussian", "level": 25,
                              "value": 30.0, "source": "my notes"})
    edited = tmp_path / "n2n_loss.yaml"
    edited.write_text(yaml.safe_dump(raw, sort_keys=False))
    code, out, err = cli("run", str(edited), "--budget", "smoke", "--storage", str(storage), "--quiet")
    assert code == 0, out + err
    assert "study n2n_loss: took the edited description, references (they change no trial)" in out
    stored = json.loads((storage / "n2n_loss" / "study.json").read_text())["spec"]
    assert stored["description"] == raw["description"] and stored["references"][-1]["method"] == "Mine"
    assert "My own question about losses." in (storage / "n2n_loss" / "report.html").read_text()
    # a second rerun of the same YAML has nothing to take
    code, out, _ = cli("run", str(edited), "--budget", "smoke", "--storage", str(storage), "--quiet")
    assert code == 0 and "took the edited" not in out
    # keys that change trials: refused, naming them; the stored study untouched
    before = (storage / "n2n_loss" / "study.json").read_text()
    raw["budgets"]["smoke"]["steps"] = 8
    raw["fixed"]["model_params"]["width"] = 32
    edited.write_text(yaml.safe_dump(raw, sort_keys=False))
    code, out, err = cli("run", str(edited), "--budget", "smoke", "--storage", str(storage), "--quiet")
    assert code == 2 and err.count("\n") == 1, err
    assert "budgets.smoke.steps" in err and "fixed.model_params.width" in err
    assert "--fresh" in err and "a new name" in err
    assert (storage / "n2n_loss" / "study.json").read_text() == before


def test_evaluate_scores_a_studys_best_model_beside_the_baselines(n2n_smoke, tmp_path):
    from tests.fixtures import image_folder

    sdir, _ = n2n_smoke
    folder = image_folder(tmp_path / "test", 2)
    code, out, err = cli("evaluate", "--test", f"folder:{folder}", "--noise", "gaussian:sigma=25", "--study", "n2n_loss",
                         "--cell", "noise=gaussian,loss=l2", "--storage", str(sdir.parent))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["method", "test_set", "noise", "images", "channels", "psnr", "ssim", "seconds_per_image",
                                 "published", "note"]
    assert [ln.split()[0] for ln in lines[1:]] == ["noisy", "BM3D", "n2n_loss"]
    assert "n2n_loss (noise=gaussian, loss=l2)" in out and all(" 2 " in ln for ln in lines[1:])
    code, _, err = cli("evaluate", "--test", f"folder:{folder}", "--noise", "gaussian:sigma=25", "--cell", "x=y")
    assert code == 2 and "--cell needs --study" in err
