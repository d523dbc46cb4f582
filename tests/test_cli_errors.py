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
    ("tuned value the model cannot take", _set(["tune", "model_params.width"], {"type": "choice", "values": [8, "wide"]}),
     "tuned model_params.width=wide: model_params: simple_unet cannot be built"),
    ("budget's own range", _set(["budgets", "full", "tune"], {"lr": {"type": "loguniform", "low": 0, "high": 1}}),
     "loguniform needs low > 0"),
    ("unknown task", _set(["task"], "segment"), "unknown task 'segment'; known: ddpm, denoise"),
    # every name a spec holds is checked before Ray starts, not after the last trial:
    ("misspelt metric", _set(["metric"], "psrn"), "metric: task denoise does not report 'psrn'"),
    ("also metric", _set(["also"], ["bits_per_dim"]), "also[0]: task denoise does not report 'bits_per_dim'"),
    ("unknown figure", _set(["figure"], "pie"), "figure: unknown figure 'pie'; known: bars, gap, heatmap, levels, pareto"),
    ("repeated level", _set(["compare"], {"loss": ["l1", "l2", "l1"]}), "compare.loss: level 'l1' appears twice"),
]


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
])
def test_bad_flags_exit_2(tmp_path, args, needle):
    storage = tmp_path / "store"
    code, out, err = cli(*args, "--storage", str(storage)) if args[0] != "status" else cli(*args, "--storage", str(storage))
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
    from studies.cli import absolute_data_paths

    monkeypatch.chdir(tmp_path)
    assert absolute_data_paths("folder:imgs", "data") == (f"folder:{tmp_path}/imgs", str(tmp_path / "data"))
    assert absolute_data_paths("natural", "s3://bucket/data") == ("natural", "s3://bucket/data")
    assert absolute_data_paths(None, None) == (None, None)
