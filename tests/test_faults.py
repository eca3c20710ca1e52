"""Faults and limits: killed servers, locked databases, full disks, NaN and out-of-memory
training, lost teacher checkpoints, racing cancels; plus the security settings that are
checkable at the core level.

The scenarios live in tests/helpers/faults.py (bench/reliability.py runs them too); each
uses the real store, job manager and training runner on the tiny demo shop, injects one
fault and asserts that the run ends with a readable error, nothing is half-written and
the worker keeps serving. The SIGKILL and racing-cancel scenarios run on SQLite and on
PostgreSQL (the ``store_url`` fixture); the locked-database ones are SQLite's own.
"""

from __future__ import annotations

import ast
import logging
import tomllib
from pathlib import Path

import pytest

pytest.register_assert_rewrite("tests.helpers.faults")

from core.engine import redacted_url  # noqa: E402
from core.errors import StoreError  # noqa: E402
from core.ingestion.read import MAX_UPLOAD_BYTES  # noqa: E402
from core.job_context import failure_message  # noqa: E402
from core.store import Store  # noqa: E402
from tests.helpers import faults  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- faults
def test_sigkill_mid_training_then_restart_recovers(home, store_url):
    facts = faults.sigkill_mid_training(home)
    assert len(facts["interrupted"]) == 2 and facts["queued_served"]


def test_database_locked_for_two_seconds_writes_wait_and_succeed(home):
    faults.db_locked_briefly(home, hold_s=2.0)


def test_database_locked_past_the_busy_timeout_fails_with_a_sentence(home):
    messages = faults.db_locked_too_long(home)["messages"]
    assert messages[0] == (
        "The run store could not save the test results of run 1 (database is locked); "
        "please try again."
    )
    assert messages[2].startswith("The run store could not save the dataset 'Demo shop x0.05'")


def test_disk_full_while_saving_the_checkpoint(home):
    facts = faults.disk_full_while_saving(home)
    assert facts["error"] == (
        "The disk is full, so the run's files could not be written; free some space in the "
        "data directory and try again."
    )


def test_nan_loss_and_absurd_learning_rate(home):
    nan_error, lr_error = faults.nan_loss(home)["errors"]
    assert nan_error == (
        "The loss became nan in epoch 1, batch 1; lower the learning rate or the distillation "
        "weights and try again."
    )
    assert lr_error == "The learning rate must be a number above 0 and at most 10; got 1e+38."


def test_out_of_memory_gets_one_sentence(home):
    errors = faults.out_of_memory(home)["errors"]
    assert set(errors) == {"cuda", "cpu", "python"}
    assert len(set(errors.values())) == 1


def test_teacher_checkpoint_deleted_or_damaged_before_the_student(home):
    errors = faults.teacher_checkpoint_lost(home)["errors"]
    assert errors["deleted"] == (
        "The checkpoint of run #1 is missing from the data directory; train it again."
    )
    assert errors["malicious pickle"] == (
        "The checkpoint of run #1 cannot be read (UnpicklingError); it is damaged or not a "
        "Distillery checkpoint, so train that run again."
    )


def test_four_concurrent_runs_with_random_cancels_twenty_times(home, store_url):
    report = faults.concurrent_cancels(home, rounds=20, seed=0)
    assert report.inconsistencies == []
    assert (report.rounds, report.runs) == (20, 80)
    assert report.statuses.get("cancelled", 0) > 0 and report.statuses.get("succeeded", 0) > 0
    assert sum(report.statuses.values()) == 80


def test_failure_messages_for_unknown_errors_keep_their_type():
    assert failure_message(ValueError("boom")) == "ValueError: boom"
    assert failure_message(OSError("disk full")) == "OSError: disk full"  # no errno: unknown
    assert failure_message(RuntimeError("CUDA error: out of memory")).startswith(
        faults.OOM_SENTENCE
    )


# --------------------------------------------------------------------------- security
def _torch_load_calls(tree: ast.AST) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "load"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id in ("torch", "pickle")
    ]


def test_every_checkpoint_load_in_core_is_weights_only():
    calls = []
    for path in sorted((REPO / "core").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for call in _torch_load_calls(tree):
            assert call.func.value.id == "torch", f"{path}: pickle.load of possibly user data"
            flags = {k.arg: k.value for k in call.keywords}
            assert "weights_only" in flags, f"{path}:{call.lineno} torch.load without weights_only"
            value = flags["weights_only"]
            assert isinstance(value, ast.Constant) and value.value is True, (path, call.lineno)
            calls.append(f"{path.name}:{call.lineno}")
        source = path.read_text()
        assert "pickle.loads(" not in source and "pickle.load(" not in source, path
    assert calls  # the checkpoint loader was found (core/models/__init__.py)


def test_loading_a_malicious_pickle_never_runs_it(home):
    assert faults.malicious_pickle_refused(home)["refused"] == ["UnpicklingError"] * 2


def test_database_password_never_shown(home, tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    for url in (
        "postgresql://user:secret@127.0.0.1:1/db",
        "postgresql+psycopg://user:secret@db.example:5432/db?sslmode=require",
        "postgresql://user@127.0.0.1:1/db?password=secret",
        "mysql://user:secret@127.0.0.1:1/db",
        "postgresql//user:secret@host",  # unparseable: nothing of it is shown
        "sqlite://user:secret@/relative.db",  # not a valid SQLite URL
    ):
        assert "secret" not in redacted_url(url)
        with pytest.raises(StoreError) as caught:
            Store(url)
        assert "secret" not in str(caught.value) and "DISTILLERY_DB_URL" in str(caught.value)
        assert "\n" not in str(caught.value)
    # A store that opens with a credential in its URL shows it masked, in .url and in logs.
    # The URL is a file: URI (uri=true): the database is the file its path names, and no
    # "file:" folder appears in the working directory.
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    with_password = f"sqlite:///file:{tmp_path / 'db' / 'runs.db'}?uri=true&password=secret"
    with Store(with_password) as store:
        assert "secret" not in store.url and "password=***" in store.url
        store.add_dataset(
            name="x", source="t", content_hash="h", n_users=1, n_items=1, n_interactions=1
        )
    assert "secret" not in caplog.text
    assert (tmp_path / "db" / "runs.db").is_file() and list(work.iterdir()) == []


def test_user_text_is_stored_without_control_characters_and_within_column_sizes(home):
    with Store() as store:
        dataset = store.add_dataset(
            name="shop\x00\x1b[31m" + "n" * 300,
            source="upload: ../../" + "x" * 5000 + "\x00.csv",
            content_hash="h",
            n_users=1,
            n_items=1,
            n_interactions=1,
        )
        assert dataset.name.startswith("shop[31mnnn") and len(dataset.name) == 200
        assert "\x00" not in dataset.source and len(dataset.source) == 500
        run = store.create_run(dataset.id, "teacher", "mf", {}, name="a\x00b\nc")
        assert run.name == "abc"


def test_absurd_training_configs_are_refused_with_a_sentence():
    from core.errors import ConfigError
    from core.train import TrainConfig

    for bad in ({"lr": float("inf")}, {"lr": 1e38}, {"lr": -1.0}, {"lr": float("nan")}):
        with pytest.raises(ConfigError, match="The learning rate must be a number above 0"):
            TrainConfig(**bad).validate()
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="Weight decay must be a number of at least 0"):
            TrainConfig(weight_decay=bad).validate()
    assert TrainConfig(lr=10.0, weight_decay=0.1).validate().lr == 10.0


def test_streamlit_config_limits_and_privacy():
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    server, browser, client = config["server"], config["browser"], config["client"]
    assert server["enableXsrfProtection"] is True
    assert browser["gatherUsageStats"] is False
    assert client.get("showErrorDetails") not in ("full", True, "true", "stacktrace")
    assert isinstance(server["maxUploadSize"], int) and 0 < server["maxUploadSize"] <= 1024
    # core enforces the same limit again on the bytes it is handed (Streamlit's MB is MiB).
    assert server["maxUploadSize"] * 1024 * 1024 == MAX_UPLOAD_BYTES
