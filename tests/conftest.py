"""Shared fixtures: an isolated data directory, the run store on SQLite and PostgreSQL, and
a store seeded with real tiny runs.

``store_url`` runs a test twice, on SQLite and on a fresh database of a throwaway
PostgreSQL server (one per test session, see tests/helpers/postgres.py); a server that
cannot start fails those tests with the reason, it never skips them.

``seeded_home`` trains a real (tiny) teacher, a distilled student, its no-teacher twin and
the popularity baseline on a small demo shop through the same job runner the app uses, once
per test session; each test gets its own copy of that data directory.
"""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from core.models import ModelConfig
from core.pipeline import RunSpec, load_demo_dataset, popularity_spec, student_specs
from core.train import TrainConfig

TINY_SCALE = 0.05
TINY_TEACHER = RunSpec(
    name="teacher",
    role="teacher",
    model=ModelConfig(family="sasrec", dim=32, layers=1, heads=2, max_len=20, dropout=0.1),
    train=TrainConfig(epochs=2, batch_size=64, lr=3e-3, patience=2),
)
TINY_STUDENT = ModelConfig(family="sasrec", dim=8, layers=1, heads=1, max_len=20, dropout=0.1)


@pytest.fixture(autouse=True)
def _runs_on_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests train their many tiny runs on the job manager's threads: a process per run
    (the app's default, core.process_backend) costs seconds to start, longer than a tiny
    run. tests/test_process_backend.py and the demo's browser test
    (tests/e2e/test_demo_reload.py) train in processes, as the app does."""
    monkeypatch.setenv("DISTILLERY_EXECUTOR", "thread")


def tiny_student_specs(methods=("soft",)) -> list[RunSpec]:
    return student_specs(TINY_STUDENT, replace(TINY_TEACHER.train, epochs=2), methods)


@pytest.fixture
def fresh_app(monkeypatch: pytest.MonkeyPatch):
    """Page tests: per-test Streamlit caches, and app.py run on every AppTest rerun.

    get_store/get_jobs are st.cache_resource, so each test must open the store of its own
    DISTILLERY_HOME. AppTest resets ``PagesManager.uses_pages_directory`` before each run, so
    with a pages/ folder next to app.py every rerun after the first would run the page file
    alone (Streamlit's old pages/ mode) and skip app.py and its sidebar. A real server leaves
    that mode for good once app.py calls st.navigation (see pages/common.py); this keeps it
    off in tests too.
    """
    import streamlit as st
    from streamlit.runtime.pages_manager import PagesManager

    init = PagesManager.__init__

    def v2_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", v2_init)
    # The cached job manager of each test is shut down after it: its threads poll the
    # store, and a test's store must not be watched by workers once the test is over.
    from core.jobs import JobManager

    managers: list[JobManager] = []
    init_manager = JobManager.__init__

    def tracked_init(self, *args, **kwargs):
        init_manager(self, *args, **kwargs)
        managers.append(self)

    monkeypatch.setattr(JobManager, "__init__", tracked_init)
    st.cache_resource.clear()
    st.cache_data.clear()
    yield
    for manager in managers:
        manager.shutdown(wait=True, cancel_pending=True)
    st.cache_resource.clear()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty, isolated DISTILLERY_HOME (the SQLite store lives inside it)."""
    root = tmp_path / "home"
    root.mkdir()
    monkeypatch.setenv("DISTILLERY_HOME", str(root))
    monkeypatch.delenv("DISTILLERY_DB_URL", raising=False)
    return root


@pytest.fixture(scope="session")
def postgres_server():
    """One throwaway PostgreSQL server for the whole session, started on first use."""
    from tests.helpers.postgres import PostgresServer, PostgresUnavailable

    server = PostgresServer()
    try:
        server.start()
    except PostgresUnavailable as exc:
        server.stop()
        pytest.fail(f"The PostgreSQL test server could not start: {exc}", pytrace=False)
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store_url(
    request: pytest.FixtureRequest, db_backend: str, home: Path, monkeypatch: pytest.MonkeyPatch
):
    """The URL of an empty run store, on each backend in turn: the default SQLite file in
    ``home``, or a fresh database on the session's PostgreSQL server (then
    ``DISTILLERY_DB_URL`` points at it, for this process and its children)."""
    if db_backend == "sqlite":
        from core.engine import database_url

        yield database_url()
        return
    server = request.getfixturevalue("postgres_server")
    name, url = server.create_database()
    monkeypatch.setenv("DISTILLERY_DB_URL", url)
    yield url
    server.drop_database(name)


def pytest_terminal_summary(terminalreporter) -> None:
    """One line saying how the PostgreSQL tests went, so a CI log shows that they ran."""
    outcomes: Counter[str] = Counter()
    for outcome in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            nodeid = getattr(report, "nodeid", "")
            if "[postgresql" in nodeid or "test_postgres.py" in nodeid:
                outcomes[outcome] += 1
    if outcomes:
        counts = ", ".join(f"{n} {outcome}" for outcome, n in outcomes.items())
        terminalreporter.write_line(f"PostgreSQL tests (real server): {counts}")


def _seed(root: Path) -> dict[str, int]:
    from core.ingestion.registry import register_dataset
    from core.jobs import JobManager
    from core.runner import submit_run, training_runner
    from core.store import Store

    store = Store()
    data = load_demo_dataset(scale=TINY_SCALE)
    dataset = register_dataset(store, data, source="demo shop")
    ids: dict[str, int] = {"dataset": dataset.id}
    with JobManager(store, training_runner, workers=1) as jobs:
        ids["popularity"] = submit_run(jobs, dataset.id, popularity_spec())
        ids["teacher"] = submit_run(jobs, dataset.id, TINY_TEACHER)
        assert jobs.wait(ids["teacher"]) == "succeeded", store.get_run(ids["teacher"]).error
        for spec in tiny_student_specs():
            ids[spec.name] = submit_run(jobs, dataset.id, spec, teacher_run_id=ids["teacher"])
        for run_id in ids.values():
            if run_id != dataset.id:
                jobs.wait(run_id)
    for name, run_id in ids.items():
        if name != "dataset":
            run = store.get_run(run_id)
            assert run.status == "succeeded", (name, run.error)
    store.close()
    return ids


@pytest.fixture(scope="session")
def seeded_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    root = tmp_path_factory.mktemp("seeded") / "home"
    root.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DISTILLERY_HOME", str(root))
        mp.delenv("DISTILLERY_DB_URL", raising=False)
        ids = _seed(root)
    return root, ids


@pytest.fixture
def seeded_home(
    seeded_template, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, dict[str, int]]:
    """A private copy of a data directory holding a dataset and four finished runs.

    Returns (path, ids) where ids maps "dataset", "popularity", "teacher",
    "student-no-teacher" and "student-soft" to their store ids.
    """
    template, ids = seeded_template
    root = tmp_path / "home"
    shutil.copytree(template, root)
    monkeypatch.setenv("DISTILLERY_HOME", str(root))
    monkeypatch.delenv("DISTILLERY_DB_URL", raising=False)
    return root, ids
