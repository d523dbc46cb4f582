"""Malformed specs and flags: exit 2, one line naming the problem, nothing written."""
import pytest
import yaml

from tests.conftest import DATA, cli

BASE = yaml.safe_load((DATA / "tiny.yaml").read_text())


def _variant(tmp_path, mutate):
    spec = yaml.safe_load((DATA / "tiny.yaml").read_text())
    mutate(spec)
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(spec))
    return str(p)


def _set(path, value):
    def mutate(spec):
        d = spec
        for k in path[:-1]:
            d = d[k]
        if value is KeyError:
            del d[path[-1]]
        else:
            d[path[-1]] = value
    return mutate


def _both(*mutations):
    def mutate(spec):
        for m in mutations:
            m(spec)
    return mutate


CASES = [
    ("unknown key", _set(["optimizer"], "sgd"), "optimizer: unknown key"),
    ("wrong type", _set(["seeds"], "three"), "seeds: "),
    ("empty compare", _set(["compare"], {}), "compare needs at least one factor"),
    ("bad range", _set(["tune", "lr"], {"type": "loguniform", "low": 0.1, "high": 0.01}), "low=0.1 must be below high=0.01"),
    ("unknown noise", _set(["fixed", "noise"], "speckle"), "unknown noise 'speckle'"),
    ("unknown model", _set(["fixed", "model"], "resnet9000"), "unknown model 'resnet9000'"),
    ("unknown loss", _set(["compare", "loss"], ["l1", "huber"]), "unknown loss 'huber'"),
    ("budget missing", _set(["budgets", "full"], KeyError), "budgets full missing"),
    ("bad noise level", _set(["fixed", "noise_params"], {"sigma": -3}), "sigma=-3"),
    ("unknown dataset", _set(["fixed", "dataset"], "imagenet"), "unknown dataset 'imagenet'"),
    ("tuned factor", _set(["tune", "loss"], {"type": "choice", "values": ["l1"]}), "both compared and tuned"),
    # caught before Ray starts, not inside every trial:
    ("misspelt model param", _set(["fixed", "model_params"], {"widht": 8}), "simple_unet takes no 'widht'; it takes width"),
    ("crop the model cannot take", _set(["budgets", "smoke", "crop"], 18),
     "cell loss=l1, budget smoke: crop=18: SimpleUNet needs H and W divisible by 4, got 18x18"),
    ("tuned value the model cannot take",
     _both(_set(["fixed", "model_params"], {}), _set(["tune", "model_params.width"], {"type": "choice", "values": [8, "wide"]})),
     "tuned model_params.width=wide: model_params: simple_unet cannot be built"),
    ("budget's own range", _set(["budgets", "full", "tune"], {"lr": {"type": "loguniform", "low": 0, "high": 1}}),
     "loguniform needs low > 0"),
    ("unknown task", _set(["task"], "segment"), "unknown task 'segment'; known: ddpm, denoise"),
    # every name a spec holds is checked before Ray starts, not after the last trial:
    ("misspelt metric", _set(["metric"], "psrn"), "metric: task denoise does not report 'psrn'"),
    ("also metric", _set(["also"], ["bits_per_dim"]), "also[0]: task denoise does not report 'bits_per_dim'"),
    ("unknown figure", _set(["figure"], "pie"), "figure: unknown figure 'pie'; known: bars, gap, heatmap, levels, pareto"),
    ("repeated level", _set(["compare"], {"loss": ["l1", "l2", "l1"]}), "compare.loss: level 'l1' appears twice"),
    # a claim whose source names one noise ("sigma 25": Gaussian) is judged on that noise, not pooled over both
    ("claim on the wrong slice", _both(
        _set(["compare"], {"noise": {"gaussian": {"noise": "gaussian", "noise_params": {"sigma": 25}},
                                     "poisson": {"noise": "poisson", "noise_params": {"lam": 30}}},
                           "loss": ["l1", "l2"]}),
        _set(["question"], "loss"),
        _set(["expect"], [{"claim": "L2 beats L1", "source": "a paper, table 1 (BSD68, sigma 25)", "a": "l2", "b": "l1"}])),
     "expect[0] ('L2 beats L1'): its source names noise=gaussian ('sigma' in 'a paper, table 1 (BSD68, sigma 25)'), but "
     "it would be judged pooled over noise=gaussian, poisson; add where: {noise: gaussian}"),
    ("Noise2Noise with one capture", _set(["fixed"], {**BASE["fixed"], "target": "noisy", "train_captures": 1}),
     "train_captures: 1 leaves target 'noisy' short"),
    ("no captures", _set(["fixed"], {**BASE["fixed"], "train_captures": 0}), "number of captures from 1 to 16, got 0"),
    # a noise parameter of another noise: named, with what this noise takes (was a 48-line TypeError)
    ("wrong noise parameter", _set(["fixed"], {**BASE["fixed"], "noise": "poisson", "noise_params": {"sigma": 30}}),
     "noise 'poisson' takes no parameter 'sigma'; it takes: lam"),
    ("noise level left out", _set(["fixed"], {k: v for k, v in BASE["fixed"].items() if k != "noise_params"}),
     "noise_params: noise 'gaussian' needs its level 'sigma' stated"),
    ("unknown trial key lists the allowed", _set(["fixed", "weight_decay"], 0.1),
     "weight_decay: unknown key; allowed: model, model_params, lr,"),
    ("unknown budget key lists the allowed", _set(["budgets", "smoke", "optimiser"], "sgd"),
     "budgets.smoke.optimiser: unknown key; allowed: trials_per_cell, paper, seeds, max_seeds, steps,"),
    ("absurd step count", _set(["budgets", "smoke", "steps"], 10**12), "less than or equal to 100000000"),
    ("tuned and fixed", _set(["tune", "batch_size"], {"type": "choice", "values": [4, 8]}),
     "'batch_size' is tuned and also set by budgets."),
    ("exclusion of an unknown factor", _set(["exclude"], [{"noise": "poisson"}]),
     "exclude[0]: 'noise' is not a compared factor; factors: loss"),
    ("exclusion of an unknown level", _set(["exclude"], [{"loss": "l0"}]), "exclude[0]: 'l0' is not a level of 'loss'"),
    ("exclusion of every cell", _set(["exclude"], [{"loss": "l1"}, {"loss": "l2"}]), "exclude leaves no cell to run"),
    ("a published row set beside a level that is not one", _set(["references"], [
        {"method": "m", "test_set": "faces", "noise": "gaussian", "level": 25, "value": 30, "source": "s",
         "where": {"loss": "huber"}}]), "references[0].where: 'huber' is not a level of 'loss'"),
    ("a published row set beside excluded cells", _both(_set(["exclude"], [{"loss": "l1"}]), _set(["references"], [
        {"method": "m", "test_set": "faces", "noise": "gaussian", "level": 25, "value": 30, "source": "s",
         "where": {"loss": "l1"}}])), "references[0].where: every cell where loss=l1 is excluded"),
    ("a scheme that needs sigma on Poisson noise",
     _set(["fixed"], {**BASE["fixed"], "target": "r2r", "noise": "poisson", "noise_params": {"lam": 30}}),
     "target 'r2r' needs one known Gaussian sigma"),
    # a training crop larger than the training images failed in every trial (faces are 24x24)
    ("crop larger than the images", _set(["budgets", "smoke", "crop"], 32),
     "cell loss=l1: training crops of 32x32 do not fit dataset 'faces''s 24-pixel training images; use crop 24 or less"),
    ("Neighbor2Neighbor's doubled crop larger than the images", _set(["fixed"], {**BASE["fixed"], "target": "neighbor"}),
     "training crops of 32x32 (crop 16 x2) do not fit dataset 'faces''s 24-pixel training images; use crop 12 or less"),
    ("tuned and fixed nested", _set(["tune", "model_params.width"], {"type": "choice", "values": [4, 8]}),
     "'model_params.width' is tuned and also set by fixed.model_params.width"),
]


@pytest.mark.parametrize("lam", [0, -10, [0, 5]])
def test_one_parameter_states_one_allowed_range(lam):
    """lam: 0 and lam: -10 used to say two different things ("lam > 0" and "[0.0, inf]")."""
    from denoise_core.noise import build_noise

    with pytest.raises(ValueError, match=r"is out of range; allowed \(0, inf\)"):
        build_noise("poisson", lam=lam)


@pytest.mark.parametrize("label,mutate,needle", CASES, ids=[c[0] for c in CASES])
def test_malformed_spec_exits_2_with_one_line(tmp_path, label, mutate, needle):
    storage = tmp_path / "store"
    code, out, err = cli("run", _variant(tmp_path, mutate), "--storage", str(storage), "--budget", "smoke")
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and err.startswith("error: ") and needle in err, err
    assert not storage.exists()


@pytest.mark.parametrize("args,needle", [
    (["run", "/nonexistent/study.yaml"], "does not exist"),
    (["run", "no_such_study"], "unknown study 'no_such_study'"),
    (["run", "n2n_loss", "--budget", "huge"], "'huge' is not one of"),
    (["run", "n2n_loss", "--gpus-per-trial", "-1"], "--gpus-per-trial"),
    (["run", "n2n_loss", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["run", "n2n_loss", "--data-root", "/nonexistent/root"], "is not a directory"),
    (["status", "never_ran"], "no study 'never_ran'"),
    (["run", "n2n_loss", "--storage", "/proc/nope/studies"], "cannot create the study folder"),
    (["run", "n2n_loss", "--address", "127.0.0.1:1"], "no Ray cluster answers there"),
    (["run", "n2n_loss", "--dataset", "folder:/nonexistent/imgs"], "image folder '/nonexistent/imgs' does not exist"),
])
def test_bad_flags_exit_2(tmp_path, args, needle):
    storage = tmp_path / "store"
    code, out, err = cli(*args, *([] if "--storage" in args else ["--storage", str(storage)]))
    assert code == 2 and needle in err and err.count("\n") == 1, err
    assert not storage.exists()


def test_bad_yaml(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("name: x\ncompare: [unclosed\n")
    code, _, err = cli("run", str(p), "--storage", str(tmp_path / "s"))
    assert code == 2 and "is not valid YAML" in err and err.count("\n") == 1


def test_list_and_show():
    code, out, _ = cli("list")
    assert code == 0 and {"n2n_loss", "clean_vs_noisy", "noise_level", "architectures"} <= {ln.split()[0] for ln in out.splitlines()}
    code, out, _ = cli("show", "n2n_loss")
    assert code == 0 and "# budget quick: 15 cells x (2 tuning + 3 confirm) = 75 trials" in out
    code, out, _ = cli("show", "ddpm_schedule")
    assert code == 0 and "# budget quick: 24 cells x (2 tuning + 2 confirm) = 96 trials" in out


def test_every_catalog_study_validates_every_cell_at_every_budget():
    from studies.spec import catalog_names, load_spec

    names = catalog_names()
    assert {"n2n_loss", "clean_vs_noisy", "noise_level", "architectures", "ddpm_schedule"} <= set(names)
    for name in names:
        load_spec(name, check=True)  # raises SpecError naming the cell and budget on any bad config


def test_data_paths_given_on_the_command_line_become_absolute(tmp_path, monkeypatch):
    """Trials run in Ray worker directories, so a relative --data-root or folder: would point elsewhere there."""
    from denoise_study.cli import absolute_data_paths

    monkeypatch.chdir(tmp_path)
    assert absolute_data_paths("folder:imgs", "data") == (f"folder:{tmp_path}/imgs", str(tmp_path / "data"))
    assert absolute_data_paths("natural", "s3://bucket/data") == ("natural", "s3://bucket/data")
    assert absolute_data_paths(None, None) == (None, None)
    assert absolute_data_paths("train=folder:imgs,val=Set12,test=BSD68", None) == (
        {"train": f"folder:{tmp_path}/imgs", "val": "Set12", "test": "BSD68"}, None)


def test_bad_data_is_refused_before_ray_with_one_line(tmp_path):
    """Truncated images (every trial would fail on them) are found before Ray starts: exit 2, nothing written."""
    import numpy as np
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(12):
        Image.fromarray((np.random.default_rng(i).random((48, 48)) * 255).astype("uint8")).save(folder / f"{i:02d}.png")
        data = (folder / f"{i:02d}.png").read_bytes()
        (folder / f"{i:02d}.png").write_bytes(data[: len(data) // 2])
    storage = tmp_path / "store"
    code, out, err = cli("run", str(DATA / "tiny.yaml"), "--budget", "smoke", "--dataset", f"folder:{folder}",
                         "--storage", str(storage))
    assert code == 2 and err.count("\n") == 1, err
    assert "split train" in err and "00.png" in err and "truncated" in err, err
    assert not storage.exists()


@pytest.mark.parametrize("content,needle", [("[1, 2]", "not a list"), ('"x"', "not a str"), ("{", "cannot read")])
def test_malformed_trial_json_exits_2(tmp_path, content, needle):
    p = tmp_path / "t.json"
    p.write_text(content)
    code, out, err = cli("trial", str(p))
    assert code == 2 and needle in err and err.count("\n") == 1, err


def test_the_spec_reference_covers_every_key_and_component():
    """`denoise-study spec` is generated from the models and registries: every field of a study, a budget and each
    task's config, and every registered noise (with its level parameter), model, loss, training scheme and schedule
    is listed."""
    from denoise_core.diffusion import SCHEDULES
    from denoise_core.losses import LOSSES
    from denoise_core.models import MODELS
    from denoise_core.noise import NOISES
    from denoise_core.schemes import SCHEMES
    from denoise_core.tasks import TASKS
    from studies.spec import Budget, StudySpec

    code, out, err = cli("spec")
    assert code == 0, err
    lines = out.splitlines()
    for cls in (StudySpec, Budget, *(TASKS.get(t).config for t in TASKS.names)):
        for key in cls.model_fields:
            assert any(ln.split()[:1] == [key] for ln in lines), key
    for name in NOISES.names:
        param = NOISES.get(name).param  # none for real noise: it has no model, and no level
        assert any(ln.split()[:1] == [name] and (f"level: {param}" in ln if param else "level:" not in ln)
                   for ln in lines), name
    for reg in (MODELS, LOSSES, SCHEMES, SCHEDULES):
        for name in reg.names:
            assert any(ln.split()[:1] == [name] for ln in lines), name
    code, out, _ = cli("spec", "noise")
    assert code == 0 and "poisson" in out and "lam=30.0" in out and "Models" not in out
    code, _, err = cli("spec", "noises")
    assert code == 2 and "unknown section 'noises'" in err


def test_every_component_is_described_by_a_whole_sentence():
    """`spec model` (and every registry) shows each component's first sentence whole, never cut where a line of its
    docstring wrapped."""
    code, out, _ = cli("spec", "model", "noise", "loss", "schedule")
    rows = [ln for ln in out.splitlines() if ln and not ln.endswith(":") and not ln.startswith("name ")]
    assert code == 0 and len(rows) >= 15, out
    assert all(ln.rstrip().endswith((".", ")")) for ln in rows), [ln for ln in rows if not ln.rstrip().endswith((".", ")"))]


def test_every_model_a_study_yaml_may_hold_is_a_section_of_the_spec_reference():
    """Walk the spec's models from StudySpec through its fields' types: every model reached (budgets, tune entries,
    claims, references ...) has a section of its own that lists each of its fields, and the field that holds it
    points there; the YAML's own key (references, expect) names the section too."""
    from studies.reference import model_sections, nested_models
    from studies.spec import StudySpec

    sections, seen, todo = model_sections(), set(), [StudySpec]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        assert model in sections, f"{model.__name__} is reachable from StudySpec but has no section"
        code, out, err = cli("spec", sections[model][0])
        assert code == 0, err
        rows = out.splitlines()[1:]
        for key, field in model.model_fields.items():
            row = next((ln for ln in rows if ln.split()[:1] == [key]), None)
            assert row is not None, (model.__name__, key)
            for inner in nested_models(field.annotation):
                assert f"(see `spec {sections[inner][0]}`)" in row, row
                todo.append(inner)
    assert {m.__name__ for m in seen} == {"StudySpec", "Budget", "Param", "Claim", "Reference"}
    from studies.reference import model_rows

    blank = [f"{m.__name__}.{key}" for m in seen for key, _, _, what in model_rows(m) if not what]
    assert not blank, f"keys without a description in `spec`: {blank}"
    code, out, _ = cli("spec", "references")
    assert code == 0 and all(f in out for f in ("method", "test_set", "level", "baseline", "protocol"))
    assert cli("spec", "expect")[1] == cli("spec", "claim")[1]


def test_a_budget_that_asks_for_gpus_where_none_can_come_exits_2(tmp_path):
    """A local Ray on a machine without a GPU can never give a trial one: the run would wait forever."""
    from tests.conftest import cli_process, ray_env

    proc = cli_process("run", str(DATA / "tiny.yaml"), "--budget", "smoke", "--gpus-per-trial", "0.5",
                       "--storage", str(tmp_path / "s"), env=ray_env())
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 2, out
    assert "budget 'smoke' of tiny asks for 0.5 GPU per trial (--gpus-per-trial), but this machine has no GPU" in out
    assert "--gpus-per-trial 0" in out and out.count("error:") == 1
    assert not (tmp_path / "s" / "tiny").exists()  # nothing written


def test_excluded_cells_are_left_out_of_the_plan_and_claims_must_keep_theirs():
    """`exclude` drops every cell it matches (R2R where the noise has no sigma), and nothing else; a claim whose side
    would lose every cell is refused."""
    from studies.spec import parse_spec

    raw = {**BASE, "compare": {"noise": {"gaussian": {"noise": "gaussian", "noise_params": {"sigma": 25}},
                                         "poisson": {"noise": "poisson", "noise_params": {"lam": 30}}},
                               "target": ["clean", "r2r", "sure"]},
           "exclude": [{"noise": "poisson", "target": "r2r"}, {"noise": "poisson", "target": "sure"}]}
    raw["fixed"] = {k: v for k, v in BASE["fixed"].items() if k not in ("noise", "noise_params")}
    spec = parse_spec(raw)
    assert spec.cell_keys() == ["noise=gaussian,target=clean", "noise=gaussian,target=r2r",
                                "noise=gaussian,target=sure", "noise=poisson,target=clean"]
    claim = {"claim": "c", "source": "s", "a": "r2r", "b": "clean"}
    assert parse_spec({**raw, "expect": [{**claim, "where": {"noise": "gaussian"}}]}).expect
    with pytest.raises(ValueError, match=r"expect\[0\]: every cell of target=r2r where noise=poisson is excluded"):
        parse_spec({**raw, "expect": [{**claim, "where": {"noise": "poisson"}}]})
