"""The command line: every subcommand has --help; load-demo registers the demo once."""

from __future__ import annotations

import pytest

from core.cli import build_parser, main
from core.store import Store


@pytest.mark.parametrize("command", ["stats", "demo", "load-demo", "run"])
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
            "--json",
            str(out),
        ]
    )
    assert code == 0
    import json

    rows = json.loads(out.read_text())
    assert [r["role"] for r in rows] == ["popularity", "teacher", "baseline", "student"]
    assert "teacher_kept" in rows[-1] and "student-combined" in capsys.readouterr().out
