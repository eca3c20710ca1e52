"""The command line's data flags: columns mapped by hand, JSON Lines, and stats as strict JSON."""

from __future__ import annotations

import json

import pytest

from core.cli import main

T0 = 1_600_000_000


def strict_json(text: str) -> dict:
    """Parse JSON that must not hold NaN or Infinity (Python's json accepts them by default)."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def odd_log(tmp_path):
    """A log whose column names nothing recognises."""
    path = tmp_path / "odd.csv"
    rows = ["who,what,when,how"]
    rows += [f"s{k % 3},p{k % 4},{T0 + k},{['view', 'cart', 'purchase'][k % 3]}" for k in range(12)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_stats_of_a_log_without_timestamps_is_strict_json(tmp_path, capsys):
    path = tmp_path / "plain.csv"
    path.write_text("user_id,item_id\n1,a\n1,b\n1,c\n2,a\n2,b\n2,c\n")
    assert main(["stats", "--data", str(path)]) == 0
    stats = strict_json(capsys.readouterr().out)
    assert stats["interactions_per_day"] is None  # NaN before: no time span to divide by
    assert stats["users"] == 2 and stats["notes"] == ["no timestamps: file order used"]


def test_columns_mapped_by_hand(odd_log, capsys):
    flags = ["--user-col", "who", "--item-col", "what", "--time-col", "when"]
    assert main(["stats", "--data", str(odd_log), *flags, "--event-col", "how"]) == 0
    stats = strict_json(capsys.readouterr().out)
    assert (stats["users"], stats["items"], stats["interactions"]) == (3, 4, 12)
    assert "timestamps read as unix seconds" in stats["notes"]
    assert "event weights used: view 1, cart 2, purchase 3" in stats["notes"]


def test_unmapped_log_and_unknown_column_are_one_sentence(odd_log, capsys):
    assert main(["stats", "--data", str(odd_log)]) == 2
    assert "Cannot tell which column of 'odd.csv' holds the user and the item ids" in (
        capsys.readouterr().err
    )
    assert main(["stats", "--data", str(odd_log), "--user-col", "who", "--item-col", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: The item column 'nope' is not in 'odd.csv' (columns found:")
    assert err.count("\n") == 1


def test_some_columns_by_hand_and_the_rest_detected(tmp_path, capsys):
    path = tmp_path / "events.jsonl"
    rows = [
        {"visitor": f"v{k % 3}", "sku": f"s{k % 5}", "timestamp": T0 + k, "kind": "view"}
        for k in range(9)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["stats", "--data", str(path), "--user-col", "visitor", "--item-col", "sku"]) == 0
    stats = strict_json(capsys.readouterr().out)
    assert stats["users"] == 3 and stats["items"] == 5 and stats["span_days"] > 0


def test_column_flags_need_a_log(capsys):
    assert main(["stats", "--user-col", "who"]) == 2
    assert "add --data FILE" in capsys.readouterr().err


@pytest.mark.parametrize("setting", ["auto", "on", "off"])
def test_history_mask_setting_reaches_the_dataset(tmp_path, capsys, setting):
    path = tmp_path / "repeats.csv"
    # Every user's test item repeats a training item: auto turns the mask off.
    rows = [f"u{u},i{i},{T0 + t}" for u in range(4) for t, i in enumerate((1, 2, 3, 1))]
    path.write_text("user_id,item_id,timestamp\n" + "\n".join(rows) + "\n")
    assert main(["stats", "--data", str(path), "--history-mask", setting]) == 0
    stats = strict_json(capsys.readouterr().out)
    assert stats["history_mask"] == setting
    assert stats["repeat_share"] == pytest.approx(0.5)  # valid items are new, test items repeat
    assert stats["masks_history"] is (setting == "on")
