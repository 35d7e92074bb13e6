"""The training CLI: argument errors, and the distributed path on two logical CPU devices."""

from __future__ import annotations

import pytest

from convbridge.card import read_card
from tests.conftest import run_training
from training.__main__ import main, model_name, parse_args


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--variant", "vgg"], "invalid choice: 'vgg'"),
        (["--variant", "all", "--name", "x"], "--name names one model"),
        (["--variant", "gap", "--epochs", "0"], "--epochs must be at least 1"),
        (["--variant", "gap", "--broadcast", "bilinear"], "invalid choice: 'bilinear'"),
        (["--variant", "gap", "--limit", "0"], "--limit must be at least 1"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_unknown_dataset_is_an_error_not_a_traceback(capsys, tmp_path) -> None:
    assert main(["--variant", "gap", "--dataset", "imagenet", "--out", str(tmp_path)]) == 2
    assert "unknown dataset 'imagenet'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_model_names() -> None:
    assert model_name("global_context", "resize") == "global_context"
    assert model_name("global_context", "tile") == "global_context_tile"
    assert model_name("gap", "tile") == "gap"


@pytest.mark.slow
def test_mirrored_training_on_two_logical_cpus(tmp_path) -> None:
    result = run_training(
        "--variant",
        "gap",
        "--dataset",
        "digits",
        "--epochs",
        "1",
        "--limit",
        "512",
        "--cpu-devices",
        "2",
        "--quiet",
        "--no-report",
        "--out",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    card = read_card(tmp_path / "gap" / "1")
    assert card.training.strategy == "MirroredStrategy"
    assert card.training.replicas == 2
    assert card.dataset.train_samples == 512
    assert card.training.epochs_run == 1
    assert "gap" in result.stdout and "accuracy" in result.stdout


def test_skip_if_present_leaves_a_filled_repository_alone(tmp_path, capsys) -> None:
    (tmp_path / "gap" / "3").mkdir(parents=True)
    assert main(["--variant", "all", "--out", str(tmp_path), "--skip-if-present"]) == 0
    assert "nothing to train" in capsys.readouterr().out
    assert [p.name for p in (tmp_path / "gap").iterdir()] == ["3"]
