"""PostgreSQL for real: the throwaway server, the claim's row locks, and the password.

The store, jobs, worker and migration tests already run on PostgreSQL too (their
``[postgresql]`` variants); these are the checks that only make sense there: that the
server is real, that claims lock rows with ``FOR UPDATE SKIP LOCKED``, and that a database
password never appears in the UI, the logs, the model card or an error sentence.
"""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path

import pytest
from sqlalchemy import event, text
from streamlit.testing.v1 import AppTest

from core.cli import main
from core.errors import StoreError
from core.jobs import JobManager
from core.pipeline import popularity_spec
from core.runner import submit_run, training_runner
from core.store import Store
from tests.helpers import faults
from tests.helpers.postgres import PASSWORD_USER
from tests.helpers.processes import WorkerProcess

APP = str(Path(__file__).resolve().parents[1] / "app.py")
WAIT_S = 120


@pytest.fixture
def password(postgres_server) -> str:
    """A fresh password for the server's password-checked user, easy to search for."""
    secret = f"pw-{secrets.token_hex(8)}"
    postgres_server.set_password(secret)
    return secret


@pytest.fixture
def secret_url(postgres_server, password, home, monkeypatch) -> str:
    """A database owned by the password user; DISTILLERY_DB_URL holds the password."""
    name, _ = postgres_server.create_database(owner=PASSWORD_USER)
    url = postgres_server.url(name, PASSWORD_USER, password)
    monkeypatch.setenv("DISTILLERY_DB_URL", url)
    yield url
    postgres_server.drop_database(name)


def test_the_throwaway_server_is_a_real_postgresql_and_claims_lock_rows(postgres_server, home):
    name, url = postgres_server.create_database()
    with Store(url) as store:
        assert store.backend == "postgresql"
        with store.engine.connect() as conn:
            assert conn.execute(text("SHOW server_version_num")).scalar_one() >= "130000"
        statements: list[str] = []
        event.listen(
            store.engine, "before_cursor_execute", lambda *a: statements.append(a[2]), retval=False
        )
        dataset = store.add_dataset(
            name="x", source="t", content_hash="h", n_users=1, n_items=1, n_interactions=1
        )
        run = store.create_run(dataset.id, "teacher", "mf", {})
        assert store.claim_run("me", 30).id == run.id
        assert any("FOR UPDATE SKIP LOCKED" in s for s in statements), statements
    postgres_server.drop_database(name)


def test_a_database_password_never_shows_in_errors_or_logs(
    postgres_server, password, secret_url, caplog, capsys
):
    caplog.set_level(logging.DEBUG)
    messages: list[str] = []
    with Store() as store:
        assert store.url.startswith(f"postgresql+psycopg://{PASSWORD_USER}:***@/")
        dataset_id = faults.tiny_dataset(store)
        with JobManager(store, training_runner) as manager:
            run_id = submit_run(manager, dataset_id, popularity_spec())
            assert manager.wait(run_id, WAIT_S) == "succeeded"
        store.add_epoch(run_id, 99, 0.5)
        try:
            store.add_epoch(run_id, 99, 0.5)  # a database error: the unique constraint
        except StoreError as exc:
            messages.append(str(exc))
        assert main(["load-demo", "--demo-scale", "0.05"]) == 0  # prints the store's URL
    good = postgres_server.url("nowhere", PASSWORD_USER, password)
    for url in (
        postgres_server.url("postgres", PASSWORD_USER, password + "-wrong"),
        good.replace("/nowhere?", "/no_such_database?"),
        f"{postgres_server.url('nowhere', PASSWORD_USER)}&password={password}",
    ):
        with pytest.raises(StoreError) as caught:
            Store(url)
        messages.append(str(caught.value))
    assert "password authentication failed" in messages[1]
    assert 'database "no_such_database" does not exist' in messages[2]
    for message in messages:
        assert password not in message and "\n" not in message, message
    printed = capsys.readouterr()
    assert f"{PASSWORD_USER}:***@" in printed.out
    assert password not in printed.out + printed.err
    assert password not in caplog.text

    # The headless worker's own log, read by whoever runs the GPU box.
    with Store() as store, JobManager(store, training_runner, workers=0) as app:
        run_id = submit_run(app, dataset_id, popularity_spec(seed=1))
        with WorkerProcess("--max-runs", "1") as worker:
            assert worker.wait(WAIT_S) == 0, worker.output
        assert store.get_run(run_id).status == "succeeded"
    assert f"serving postgresql+psycopg://{PASSWORD_USER}:***@" in worker.output
    assert password not in worker.output


def test_a_database_password_never_shows_in_the_model_card(password, secret_url):
    from core.serving.card import metrics_json, model_card
    from core.serving.facts import collect_facts
    from core.serving.gates import Gates

    student = faults.MF_STUDENT
    with Store() as store, JobManager(store, training_runner) as manager:
        dataset_id = faults.tiny_dataset(store)
        teacher = submit_run(manager, dataset_id, faults.MF_TEACHER)
        assert manager.wait(teacher, WAIT_S) == "succeeded"
        run_id = submit_run(manager, dataset_id, student, teacher_run_id=teacher)
        assert manager.wait(run_id, WAIT_S) == "succeeded", store.get_run(run_id).error
        markdown, card = model_card(collect_facts(store, run_id), Gates())
        everything = markdown + json.dumps(card) + json.dumps(metrics_json(store, run_id))
    assert everything.strip()
    assert password not in everything


def _rendered(at: AppTest) -> str:
    """Every string of every element the app rendered (their protobuf text)."""
    parts: list[str] = []

    def walk(node) -> None:
        proto = getattr(node, "proto", None)
        if proto is not None:
            parts.append(str(proto))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return "\n".join(parts)


@pytest.mark.usefixtures("fresh_app")
def test_a_database_password_never_shows_in_the_app(postgres_server, password, secret_url):
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception and not at.error
    assert "No dataset yet" in _rendered(at)
    assert password not in _rendered(at)


@pytest.mark.usefixtures("fresh_app")
def test_an_unreachable_database_is_one_sentence_in_the_app(
    postgres_server, password, secret_url, monkeypatch
):
    monkeypatch.setenv("DISTILLERY_DB_URL", secret_url.replace(password, password + "-wrong"))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert errors and "password authentication failed" in errors[0]
    assert all("\n" not in e for e in errors)
    assert password not in _rendered(at)
