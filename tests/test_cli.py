"""The command line: every subcommand has --help; load-demo registers the demo once."""

from __future__ import annotations

import pytest

from core.cli import build_parser, main
from core.pipeline import load_demo_dataset
from core.store import Store


@pytest.mark.parametrize("command", ["stats", "demo", "load-demo", "run", "worker"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: python -m core " + command in capsys.readouterr().out


def test_load_demo_registers_the_demo_shop_once(home, capsys):
    assert main(["load-demo", "--demo-scale", "0.05"]) == 0
    assert main(["load-demo", "--demo-scale", "0.05"]) == 0
    datasets = Store().list_datasets()
    assert len(datasets) == 1 and datasets[0].name == "Demo shop x0.05"
    assert "dataset #1" in capsys.readouterr().out


def test_bad_file_is_one_sentence_and_exit_code_2(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"\x00\x01\x02garbage")
    assert main(["stats", "--data", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "bad.csv" in err and err.count("\n") == 1


def test_run_prints_a_table_and_writes_json(home, tmp_path, capsys):
    out = tmp_path / "rows.json"
    code = main(
        [
            "run",
            "--demo-scale",
            "0.05",
            "--methods",
            "combined",
            "--epochs",
            "1",
            "--teacher-dim",
            "16",
            "--teacher-layers",
            "1",
            "--student-dim",
            "8",
            "--teacher-init",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    import json

    rows = json.loads(out.read_text())
    assert [r["role"] for r in rows] == ["popularity", "teacher", "baseline", "student"]
    assert "teacher_kept" in rows[-1] and "student-combined" in capsys.readouterr().out


def test_teacher_init_flag_reaches_the_students_only(home):
    from core.cli import build_parser, experiment_specs
    from core.pipeline import load_demo_dataset

    data = load_demo_dataset(scale=0.05)
    args = build_parser().parse_args(["run", "--demo-scale", "0.05", "--teacher-init"])
    _, students = experiment_specs(args, data)
    assert all(s.distill.teacher_init for s in students if s.role == "student")
    assert not any(s.distill.teacher_init for s in students if s.role == "baseline")
    plain = build_parser().parse_args(["run", "--demo-scale", "0.05"])
    assert not any(s.distill.teacher_init for s in experiment_specs(plain, data)[1])


def test_worker_with_max_runs_serves_the_queue_and_stops(home, capsys):
    from core.ingestion.registry import register_dataset
    from core.jobs import JobManager
    from core.pipeline import popularity_spec
    from core.runner import submit_run, training_runner

    with Store() as store:
        dataset = register_dataset(store, load_demo_dataset(scale=0.05), source="demo shop")
        with JobManager(store, training_runner, workers=0) as app:  # submits, never trains
            ids = [submit_run(app, dataset.id, popularity_spec(seed=i)) for i in range(3)]
            assert main(["worker", "--max-runs", "2"]) == 0
            statuses = [store.get_run(i).status for i in ids]
    assert statuses == ["succeeded", "succeeded", "queued"]  # the third is left for others
    assert "worker served 2 run(s): 2 succeeded" in capsys.readouterr().out


def test_worker_refuses_a_device_it_does_not_have(home, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["worker", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: The worker was asked to train on CUDA, but no GPU is visible")
    assert "\n" not in err.strip()
