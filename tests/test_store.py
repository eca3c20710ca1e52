"""Tests for core.store (the run store), core.db (its schema), core.leases (the run queue's
claims and leases) and core.paths.

Every test that opens a store runs twice, on SQLite and on PostgreSQL (the ``store_url``
fixture in conftest.py); the few SQLite-only checks (pragmas, in-memory) say so.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from core import paths
from core.db import Base
from core.engine import (
    alembic_config,
    database_url,
    head_revision,
    migration_connection,
    redacted_url,
)
from core.enums import Status
from core.errors import ConfigError, StoreError, TrainingCancelled
from core.leases import LeaseLost
from core.records import JobSpec, PlanStep, metric_key, parse_metric_key
from core.store import Store

HEAD = "0003"
TABLES = {
    "datasets",
    "plans",
    "runs",
    "epoch_metrics",
    "results",
    "latency",
    "parity",
    "artifacts",
    "tags",
}
CHILD_TABLES = ("epoch_metrics", "results", "latency", "parity", "artifacts", "tags")


@pytest.fixture
def store(store_url: str):
    with Store() as opened:
        yield opened


def add_dataset(store: Store, content_hash: str = "abc", name: str = "shop") -> int:
    return store.add_dataset(
        name=name,
        source="upload",
        content_hash=content_hash,
        n_users=3,
        n_items=4,
        n_interactions=10,
    ).id


def count(store: Store, table: str, run_id: int | None = None) -> int:
    where = "" if run_id is None else f" WHERE run_id = {int(run_id)}"
    with store.engine.connect() as conn:
        return conn.execute(text(f"SELECT COUNT(*) FROM {table}{where}")).scalar_one()


# --------------------------------------------------------------------------- paths, URL
def test_paths_follow_the_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILLERY_HOME", str(tmp_path / "a"))
    assert paths.data_dir() == (tmp_path / "a").resolve()
    assert paths.run_dir(7) == (tmp_path / "a" / "runs" / "run-000007").resolve()
    assert paths.datasets_dir().is_dir() and paths.bundles_dir().is_dir()
    inside = paths.runs_dir() / "x.pt"
    assert paths.to_stored(inside) == "runs/x.pt"
    assert paths.from_stored("runs/x.pt") == inside
    outside = tmp_path / "elsewhere.pt"
    assert paths.to_stored(outside) == str(outside.resolve())
    assert not paths.is_inside_data_dir(outside)
    assert not paths.is_inside_data_dir(paths.data_dir())  # never the root itself
    assert not paths.is_inside_data_dir(paths.data_dir() / ".." / "a-sibling")

    monkeypatch.setenv("DISTILLERY_HOME", str(tmp_path / "b"))
    assert paths.data_dir() == (tmp_path / "b").resolve()
    monkeypatch.delenv("DISTILLERY_HOME")
    monkeypatch.chdir(tmp_path)
    assert paths.data_dir() == (tmp_path / ".distillery").resolve()


def test_database_url_default_env_and_redaction(home, monkeypatch):
    assert database_url() == f"sqlite:///{home.resolve() / 'distillery.db'}"
    secret_url = "postgresql+psycopg://alice:s3cr3t-pw@db.example:5432/distillery"
    monkeypatch.setenv("DISTILLERY_DB_URL", secret_url)
    assert database_url() == secret_url
    shown = redacted_url()
    assert "s3cr3t-pw" not in shown
    assert shown == "postgresql+psycopg://alice:***@db.example:5432/distillery"
    assert "s3cr3t" not in redacted_url("not a url://x:s3cr3t@")


# --------------------------------------------------------------------------- schema
def test_fresh_database_is_migrated_and_matches_the_models(store, home, db_backend):
    assert store.backend == db_backend
    assert store.schema_revision() == head_revision() == HEAD
    with store.engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) >= TABLES
        diffs = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
        )
        assert diffs == []
        run_indexes = {ix["name"] for ix in inspect(conn).get_indexes("runs")}
        assert {
            "ix_runs_status",
            "ix_runs_dataset_id",
            "ix_runs_teacher_run_id",
            "ix_runs_plan_id",
            "ix_runs_depends_on_run_id",
        } <= run_indexes
        checks = {c["name"] for c in inspect(conn).get_check_constraints("runs")}
        assert {"ck_runs_role", "ck_runs_status"} <= checks
        assert {c["name"] for c in inspect(conn).get_check_constraints("plans")} == {
            "ck_plans_kind"
        }
        if db_backend == "sqlite":
            assert (home / "distillery.db").is_file()
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == 10_000


def _migrate(store: Store, how, revision: str) -> None:
    config = alembic_config()
    with migration_connection(store.engine) as conn:
        config.attributes["connection"] = conn
        how(config, revision)


def _run_columns(store: Store) -> set[str]:
    with store.engine.connect() as conn:
        return {c["name"] for c in inspect(conn).get_columns("runs")}


LEASE_COLUMNS = {"owner", "heartbeat", "lease_expires", "cancel_requested", "settled", "progress"}


def test_lease_migration_downgrades_and_upgrades_keeping_the_runs(store_url):
    with Store() as store:
        dataset_id = add_dataset(store)
        queued = store.create_run(dataset_id, "teacher", "mf", {"dim": 8})
        claimed = store.create_run(dataset_id, "baseline", "mf", {})
        assert store.claim_run("worker-a", 30).id == queued.id
        assert _run_columns(store) >= LEASE_COLUMNS

        _migrate(store, command.downgrade, "0001")
        assert store.schema_revision() == "0001"
        assert not LEASE_COLUMNS & _run_columns(store)
        with store.engine.connect() as conn:
            rows = conn.execute(text("SELECT id, status FROM runs ORDER BY id")).all()
        assert [tuple(r) for r in rows] == [(queued.id, "running"), (claimed.id, "queued")]

        _migrate(store, command.upgrade, "head")
        assert store.schema_revision() == HEAD
        again = store.get_run(queued.id)
        # A running run from before leases existed has no owner: the next process recovers it.
        assert (again.status, again.owner, again.lease_expires) == ("running", None, None)
        assert again.cancel_requested is False and again.progress == {}
        assert store.expired_runs() == [queued.id]
        assert store.get_run(claimed.id).config == {}


PLAN_COLUMNS = {"plan_id", "depends_on_run_id"}


def test_plan_migration_downgrades_and_upgrades_ending_waiting_runs(store_url):
    with Store() as store:
        dataset_id = add_dataset(store)
        _, (teacher, student) = store.create_plan(
            "demo",
            "demo",
            dataset_id,
            [
                PlanStep(JobSpec(dataset_id, "teacher", "mf", {"dim": 8})),
                PlanStep(JobSpec(dataset_id, "student", "mf", {"dim": 2}), after=0),
            ],
        )
        assert (student.status, student.depends_on_run_id) == ("waiting", teacher.id)
        assert _run_columns(store) >= PLAN_COLUMNS

        _migrate(store, command.downgrade, "0002")
        assert store.schema_revision() == "0002"
        assert not PLAN_COLUMNS & _run_columns(store)
        with store.engine.connect() as conn:
            assert "plans" not in inspect(conn).get_table_names()
            rows = conn.execute(text("SELECT id, status, error FROM runs ORDER BY id")).all()
        assert tuple(rows[0]) == (teacher.id, "queued", None)
        # Nothing would ever release it under the old schema: it ends, saying why.
        assert rows[1][1] == "cancelled" and "downgraded" in rows[1][2]
        with pytest.raises(IntegrityError), store.engine.begin() as conn:
            conn.execute(
                text("UPDATE runs SET status = 'waiting' WHERE id = :id"), {"id": teacher.id}
            )

        _migrate(store, command.upgrade, "head")
        assert store.schema_revision() == HEAD
        again = store.get_run(student.id)
        assert (again.status, again.plan_id, again.depends_on_run_id) == ("cancelled", None, None)
        assert again.finished is not None
        assert store.list_plans() == []
        assert store.get_run(teacher.id).config == {"dim": 8}


def test_older_schema_is_upgraded_when_the_store_opens(store_url):
    with Store() as first:
        add_dataset(first)
        _migrate(first, command.downgrade, "base")
        with first.engine.connect() as conn:
            assert set(inspect(conn).get_table_names()) == {"alembic_version"}
        assert first.schema_revision() is None
    with Store() as second:
        assert second.schema_revision() == HEAD
        assert second.list_datasets() == []
        add_dataset(second)
        assert len(second.list_datasets()) == 1


def test_database_from_a_newer_version_is_refused(store_url):
    with Store() as opened, opened.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'f00d'"))
    with pytest.raises(StoreError, match="schema revision f00d"):
        Store()


def test_in_memory_sqlite_works_across_threads():
    with Store("sqlite://") as mem:
        dataset_id = add_dataset(mem)
        seen: list[int] = []
        worker = threading.Thread(target=lambda: seen.append(len(mem.list_datasets())))
        worker.start()
        worker.join()
        assert seen == [1]
        assert mem.get_dataset(dataset_id).name == "shop"


# --------------------------------------------------------------------------- datasets
def test_dataset_round_trip_and_dedupe_by_content_hash(store, home):
    parquet = paths.datasets_dir() / "abc.parquet"
    first = store.add_dataset(
        name="shop",
        source="upload: shop.csv",
        content_hash="abc",
        n_users=3,
        n_items=4,
        n_interactions=10,
        stats={"density": np.float64(0.25), "span_days": float("nan")},
        split={"method": "loo", "seed": np.int64(0)},
        parquet_path=parquet,
    )
    again = store.add_dataset(
        name="renamed copy", source="x", content_hash="abc", n_users=9, n_items=9, n_interactions=9
    )
    assert again == first
    assert again.name == "shop"
    assert store.list_datasets() == [first]
    assert first.stats == {"density": 0.25, "span_days": None}
    assert first.split == {"method": "loo", "seed": 0}
    assert first.parquet_path == parquet
    with store.engine.connect() as conn:  # stored relative: the data dir can move
        assert conn.execute(text("SELECT parquet_path FROM datasets")).scalar_one() == (
            "datasets/abc.parquet"
        )
    assert first.created.tzinfo == UTC
    assert store.find_dataset("abc") == first
    assert store.find_dataset("nope") is None
    other = add_dataset(store, content_hash="def")
    assert other != first.id
    assert [d.id for d in store.list_datasets()] == [first.id, other]
    with pytest.raises(StoreError, match="Dataset 999 does not exist"):
        store.get_dataset(999)


# --------------------------------------------------------------------------- runs
def test_run_round_trip_filters_and_immutable_config(store):
    dataset_id = add_dataset(store)
    config = {"model": {"dim": np.int64(64), "dropout": 0.1}, "train": {"lr": 1e-3}, "t": (1, 2)}
    teacher = store.create_run(dataset_id, "teacher", "sasrec", config, name="big one")
    assert teacher.status == "queued"
    assert teacher.config == {
        "model": {"dim": 64, "dropout": 0.1},
        "train": {"lr": 1e-3},
        "t": [1, 2],
    }
    assert teacher.started is None and teacher.finished is None
    assert teacher.created.tzinfo == UTC
    assert teacher.label == "big one"
    assert store.get_run(teacher.id) == teacher

    teacher.config["model"]["dim"] = 1  # a record is a copy: the stored config cannot change
    assert store.get_run(teacher.id).config["model"]["dim"] == 64
    with pytest.raises(dataclasses.FrozenInstanceError):
        teacher.status = "running"  # type: ignore[misc]

    student = store.create_run(dataset_id, "student", "mf", {"dim": 8}, teacher_run_id=teacher.id)
    baseline = store.create_run(dataset_id, "baseline", "mf", {"dim": 8}, status="running")
    assert baseline.started is not None
    assert student.label == f"#{student.id} student mf"
    other_ds = add_dataset(store, content_hash="other")
    popular = store.create_run(other_ds, "popularity", "popularity", {})

    ids = lambda runs: [r.id for r in runs]  # noqa: E731
    assert ids(store.list_runs()) == [teacher.id, student.id, baseline.id, popular.id]
    assert ids(store.list_runs(dataset_id=dataset_id)) == [teacher.id, student.id, baseline.id]
    assert ids(store.list_runs(role="student")) == [student.id]
    assert ids(store.list_runs(role=["teacher", "popularity"])) == [teacher.id, popular.id]
    assert ids(store.list_runs(status="running")) == [baseline.id]
    assert ids(store.list_runs(status=["queued"], dataset_id=other_ds)) == [popular.id]
    assert ids(store.list_runs(teacher_run_id=teacher.id)) == [student.id]

    store.add_tag(student.id, "candidate")
    store.add_tag(student.id, "candidate")  # idempotent
    store.add_tag(student.id, " a-tag ")
    assert store.get_run(student.id).tags == ("a-tag", "candidate")
    assert ids(store.list_runs(tag="candidate")) == [student.id]
    store.remove_tag(student.id, "candidate")
    assert store.get_run(student.id).tags == ("a-tag",)
    with pytest.raises(ConfigError):
        store.add_tag(student.id, "  ")

    assert store.set_notes(student.id, "looks good").notes == "looks good"
    assert store.set_notes(student.id, "").notes is None

    with pytest.raises(ConfigError, match="Unknown run role"):
        store.create_run(dataset_id, "oracle", "mf", {})
    with pytest.raises(ConfigError, match="cannot be saved"):
        store.create_run(dataset_id, "teacher", "mf", {"fn": object()})
    with pytest.raises(StoreError, match="Dataset 999 does not exist"):
        store.create_run(999, "teacher", "mf", {})
    with pytest.raises(StoreError, match="Run 999 does not exist"):
        store.create_run(dataset_id, "student", "mf", {}, teacher_run_id=999)
    with pytest.raises(StoreError, match="Run 999 does not exist"):
        store.get_run(999)


def test_check_constraint_rejects_unknown_status_in_sql(store):
    run = store.create_run(add_dataset(store), "teacher", "mf", {})
    with pytest.raises(IntegrityError), store.engine.begin() as conn:
        conn.execute(text("UPDATE runs SET status = 'exploded' WHERE id = :id"), {"id": run.id})
    # The constraint is generated from the Status enum: every member is accepted.
    for status in Status:
        with store.engine.begin() as conn:
            conn.execute(
                text("UPDATE runs SET status = :s WHERE id = :id"), {"s": status, "id": run.id}
            )
    assert store.get_run(run.id).status == list(Status)[-1]


@pytest.mark.parametrize(
    ("path", "ends_with_error"),
    [
        (["running", "succeeded"], None),
        (["running", "failed"], "ValueError: boom"),
        (["running", "cancelled"], "cancelled by the user"),
        (["running", "interrupted"], "server stopped"),
        (["cancelled"], "cancelled by the user"),
        (["interrupted"], "server stopped"),
    ],
)
def test_legal_status_transitions_set_timestamps(store, path, ends_with_error):
    run = store.create_run(add_dataset(store), "teacher", "mf", {})
    for status in path:
        error = ends_with_error if status == path[-1] else None
        record = store.set_status(run.id, status, error)
        assert record.status == status
    assert record.error == ends_with_error
    assert record.finished is not None
    assert (record.started is not None) == ("running" in path)
    if record.started is not None:
        assert record.started <= record.finished
        assert record.duration_seconds >= 0
    assert record.is_terminal and not record.is_active


@pytest.mark.parametrize(
    ("path", "illegal"),
    [
        ([], "succeeded"),
        ([], "failed"),
        ([], "queued"),
        (["running"], "running"),
        (["running"], "queued"),
        (["running", "succeeded"], "running"),
        (["running", "succeeded"], "failed"),
        (["running", "failed"], "succeeded"),
        (["cancelled"], "running"),
        (["running", "interrupted"], "running"),
    ],
)
def test_illegal_status_transitions_raise(store, path, illegal):
    run = store.create_run(add_dataset(store), "teacher", "mf", {})
    for status in path:
        store.set_status(run.id, status)
    with pytest.raises(StoreError, match=f"cannot go from .* to {illegal}"):
        store.set_status(run.id, illegal)
    assert store.get_run(run.id).status == (path[-1] if path else "queued")


def test_unknown_status_raises(store):
    run = store.create_run(add_dataset(store), "teacher", "mf", {})
    with pytest.raises(StoreError, match="Unknown run status"):
        store.set_status(run.id, "exploded")


def test_expire_leases_ends_only_runs_whose_lease_ran_out(store):
    dataset_id = add_dataset(store)
    alive = store.create_run(dataset_id, "teacher", "mf", {})
    dead = store.create_run(dataset_id, "teacher", "mf", {})
    unowned = store.create_run(dataset_id, "teacher", "mf", {}, status="running")
    done = store.create_run(dataset_id, "teacher", "mf", {}, status="running")
    done = store.set_status(done.id, "succeeded")
    assert store.claim_run("alive", 60).id == alive.id
    assert store.claim_run("dead", 60).id == dead.id
    queued = store.create_run(dataset_id, "teacher", "mf", {})
    with store.engine.begin() as conn:  # the dead owner's last heartbeat was long ago
        conn.execute(
            text("UPDATE runs SET lease_expires = :t WHERE id = :id"),
            {"t": datetime(2000, 1, 1, tzinfo=UTC), "id": dead.id},
        )
    assert store.expired_runs() == [dead.id, unowned.id]
    assert store.expire_leases("its process stopped") == [dead.id, unowned.id]
    assert store.get_run(dead.id).status == "interrupted"
    assert store.get_run(unowned.id).error == "its process stopped"
    assert store.get_run(alive.id).status == "running"  # a live lease is never touched
    assert store.get_run(queued.id).status == "queued"  # some live process will run it
    assert store.get_run(done.id) == done
    assert store.expire_leases("again") == []
    assert store.count_runs() == {"interrupted": 2, "succeeded": 1, "running": 1, "queued": 1}
    # The dead owner, should it wake up, finds the run taken over.
    with pytest.raises(LeaseLost):
        store.settle(dead.id, "dead")
    assert store.renew_leases("dead", [dead.id], 60) == (set(), {dead.id})


def test_a_cancel_accepted_before_the_owner_died_still_ends_the_run_cancelled(store):
    run = store.create_run(add_dataset(store), "teacher", "mf", {})
    store.claim_run("dies-next", 60)
    assert store.request_cancel(run.id, "cancelled by the user")
    with store.engine.begin() as conn:
        conn.execute(
            text("UPDATE runs SET lease_expires = :t WHERE id = :id"),
            {"t": datetime(2000, 1, 1, tzinfo=UTC), "id": run.id},
        )
    assert store.expire_leases("interrupted", "cancelled by the user") == [run.id]
    ended = store.get_run(run.id)
    assert (ended.status, ended.error) == ("cancelled", "cancelled by the user")


# --------------------------------------------------------------------------- queue
def test_claims_take_the_oldest_queued_run_and_set_the_lease(store):
    dataset_id = add_dataset(store)
    first = store.create_run(dataset_id, "teacher", "mf", {})
    second = store.create_run(dataset_id, "baseline", "mf", {})
    claimed = store.claim_run("owner-1", 30)
    assert (claimed.id, claimed.status, claimed.owner) == (first.id, "running", "owner-1")
    assert claimed.started is not None and claimed.lease_expires is not None
    assert 25 < (claimed.lease_expires - claimed.heartbeat).total_seconds() <= 30
    assert claimed.progress == {"message": "starting"}
    assert store.claim_run("owner-2", 30).id == second.id
    assert store.claim_run("owner-3", 30) is None
    before = store.get_run(first.id).lease_expires
    assert store.renew_leases("owner-1", [first.id], 60) == (set(), set())
    assert store.get_run(first.id).lease_expires > before
    assert store.renew_leases("owner-1", [second.id], 60) == (set(), {second.id})  # not its run


def test_concurrent_claims_give_each_run_to_exactly_one_claimer(store):
    dataset_id = add_dataset(store)
    ids = [store.create_run(dataset_id, "teacher", "mf", {"i": i}).id for i in range(40)]
    start = threading.Barrier(6)
    claims: dict[str, list[int]] = {}
    errors: list[BaseException] = []

    def claimer(owner: str) -> None:
        try:
            start.wait()
            mine = claims.setdefault(owner, [])
            while (run := store.claim_run(owner, 30)) is not None:
                mine.append(run.id)
        except BaseException as exc:  # collected: a thread's exception would be lost
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    everything = sorted(i for mine in claims.values() for i in mine)
    assert everything == ids  # every run once, none twice
    for owner, mine in claims.items():
        assert all(store.get_run(i).owner == owner for i in mine)


def test_cancel_requests_from_any_process_and_the_settled_window(store):
    dataset_id = add_dataset(store)
    queued = store.create_run(dataset_id, "teacher", "mf", {})
    assert store.request_cancel(queued.id, "cancelled by the user")
    ended = store.get_run(queued.id)
    assert (ended.status, ended.error, ended.started) == (
        "cancelled",
        "cancelled by the user",
        None,
    )
    assert not store.request_cancel(queued.id, "again")  # finished: too late

    running = store.create_run(dataset_id, "teacher", "mf", {})
    store.claim_run("owner", 30)
    store.add_epoch(running.id, 1, 0.5, owner="owner", progress={"epoch": 1, "message": "epoch 1"})
    assert store.get_run(running.id).progress == {"epoch": 1, "message": "epoch 1"}
    assert store.request_cancel(running.id, "cancelled by the user")
    flagged = store.get_run(running.id)
    assert flagged.status == "running" and flagged.cancel_requested
    assert flagged.progress["message"] == "cancelling"
    assert store.renew_leases("owner", [running.id], 30) == ({running.id}, set())
    assert store.set_progress(running.id, "owner", {"message": "saving"}) is True
    with pytest.raises(TrainingCancelled):  # no epoch is stored after a cancel
        store.add_epoch(running.id, 2, 0.4, owner="owner", progress={})
    assert [e.epoch for e in store.epochs(running.id)] == [1]
    assert store.settle(running.id, "owner") is True

    late = store.create_run(dataset_id, "teacher", "mf", {})
    store.claim_run("owner", 30)
    assert store.settle(late.id, "owner") is False  # decided: it ends as the runner says
    assert not store.request_cancel(late.id, "too late")
    with pytest.raises(LeaseLost, match="no longer held by this process"):
        store.set_status(late.id, "succeeded", owner="someone else")
    assert store.set_status(late.id, "succeeded", owner="owner").status == "succeeded"
    with pytest.raises(LeaseLost):
        store.add_epoch(late.id, 1, 0.5, owner="owner")


# --------------------------------------------------------------------------- metrics
def test_epochs_round_trip(store):
    run = store.create_run(add_dataset(store), "teacher", "mf", {})
    val = {"ndcg@20": 0.2, "ndcg@10": 0.3, "recall@10": 0.5, "hr@10": np.float32(0.75)}
    first = store.add_epoch(run.id, 1, 0.7, {"task": 0.6, "kd": 0.1}, val, seconds=1.5)
    assert (first.val_ndcg, first.val_recall) == (0.3, 0.5)
    assert first.val == {"ndcg@20": 0.2, "ndcg@10": 0.3, "recall@10": 0.5, "hr@10": 0.75}
    second = store.add_epoch(run.id, 2, float("nan"), {"task": float("inf")}, {"ndcg": 0.4}, 1.0)
    assert second.loss is None and second.terms == {"task": None}
    assert (second.val_ndcg, second.val_recall) == (0.4, None)
    assert store.epochs(run.id) == [first, second]
    with pytest.raises(StoreError, match=r"(?i)could not save epoch 2 of run .*unique"):
        store.add_epoch(run.id, 2, 0.5)
    with pytest.raises(StoreError, match="Run 999 does not exist"):
        store.add_epoch(999, 1, 0.5)
    frame = store.epochs_frame([run.id])
    assert frame["epoch"].tolist() == [1, 2]
    assert frame["loss"].iloc[0] == 0.7 and math.isnan(frame["loss"].iloc[1])


def test_results_replace_per_split_and_tidy_frame(store):
    dataset_id = add_dataset(store)
    a = store.create_run(dataset_id, "teacher", "sasrec", {}, name="teacher A")
    b = store.create_run(dataset_id, "baseline", "mf", {})
    store.set_results(a.id, "test", [("ndcg", 10, 0.5), ("recall", 10, 0.7), ("coverage", 0, 0.2)])
    store.set_results(a.id, "valid", {"ndcg@10": 0.45})
    store.set_results(b.id, "test", [("ndcg", 10, 0.25), ("ndcg", 20, 0.3)])
    assert store.results(a.id) == {"ndcg@10": 0.5, "recall@10": 0.7, "coverage": 0.2}
    assert store.results(a.id, "valid") == {"ndcg@10": 0.45}

    store.set_results(a.id, "test", {"ndcg@10": 0.55, "mrr@10": float("nan")})  # replaces
    assert store.results(a.id) == {"ndcg@10": 0.55, "mrr@10": None}
    assert store.results(a.id, "valid") == {"ndcg@10": 0.45}
    records = store.result_records(a.id)
    assert [(r.split, r.key) for r in records] == [
        ("test", "mrr@10"), ("test", "ndcg@10"), ("valid", "ndcg@10")
    ]  # fmt: skip

    frame = store.results_frame([a.id, b.id], split="test")
    assert frame.columns.tolist() == [
        "run_id", "name", "role", "model", "split", "metric", "k", "key", "value"
    ]  # fmt: skip
    rows = [tuple(r) for r in frame[["run_id", "role", "key", "value"]].itertuples(index=False)]
    assert rows[:2] == [(a.id, "teacher", "mrr@10", rows[0][3]), (a.id, "teacher", "ndcg@10", 0.55)]
    assert math.isnan(rows[0][3])
    assert rows[2:] == [(b.id, "baseline", "ndcg@10", 0.25), (b.id, "baseline", "ndcg@20", 0.3)]
    assert frame.loc[frame.run_id == a.id, "name"].unique().tolist() == ["teacher A"]
    assert len(store.results_frame([a.id, b.id])) == 5
    assert store.results_frame([]).empty
    assert metric_key("ndcg", 10) == "ndcg@10" and metric_key("coverage", 0) == "coverage"
    assert parse_metric_key("long_tail@recall@20") == ("long_tail@recall", 20)
    assert parse_metric_key("jaccard") == ("jaccard", 0)


def test_latency_parity_and_artifacts(store, tmp_path):
    run = store.create_run(add_dataset(store), "student", "mf", {}, status="running")
    lat = store.add_latency(run.id, "onnxruntime", 1, 0.2, 0.3, 0.5, 4000.0, 1, {"cpu": "x86"})
    assert (lat.runtime, lat.batch, lat.p50, lat.p99, lat.qps, lat.env) == (
        "onnxruntime", 1, 0.2, 0.5, 4000.0, {"cpu": "x86"}
    )  # fmt: skip
    store.add_latency(run.id, "torch", 1, 1.0, 1.2, 1.5, 900.0)
    assert [r.runtime for r in store.latencies(run.id)] == ["onnxruntime", "torch"]
    parity = store.add_parity(run.id, 1e-6, 1.0, 500)
    assert store.parities(run.id) == [parity]

    path = paths.run_dir(run.id) / "model.pt"
    first = store.add_artifact(run.id, "checkpoint", path, 10, "a" * 64)
    again = store.add_artifact(run.id, "checkpoint", path, 12, "b" * 64)  # rewrite: one row
    assert again.id == first.id and again.bytes == 12 and again.path == path
    assert store.artifacts(run.id) == [again]


# --------------------------------------------------------------------------- deletes
def _run_with_children(store: Store, dataset_id: int, outside: Path) -> tuple[int, list[Path]]:
    run = store.create_run(dataset_id, "teacher", "mf", {}, status="running")
    folder = paths.run_dir(run.id)
    folder.mkdir(parents=True)
    checkpoint, onnx, extra = folder / "model.pt", folder / "model.onnx", folder / "card.md"
    for f in (checkpoint, onnx, extra, outside):
        f.write_bytes(b"x")
    store.update_run(run.id, num_params=10, checkpoint_path=checkpoint, onnx_path=onnx)
    store.add_epoch(run.id, 1, 0.5)
    store.set_results(run.id, "test", [("ndcg", 10, 0.5)])
    store.add_latency(run.id, "torch", 1, 1, 1, 1, 1)
    store.add_parity(run.id, 0.0, 1.0, 10)
    store.add_artifact(run.id, "card", extra, 1, "c" * 64)
    store.add_artifact(run.id, "external", outside, 1, "d" * 64)
    store.add_tag(run.id, "keep")
    store.set_status(run.id, "succeeded")
    return run.id, [checkpoint, onnx, extra, folder]


def test_delete_run_cascades_to_children_and_files_inside_the_data_dir(store, tmp_path):
    dataset_id = add_dataset(store)
    outside = tmp_path / "users-own-file.bin"
    run_id, inside = _run_with_children(store, dataset_id, outside)
    student = store.create_run(dataset_id, "student", "mf", {}, teacher_run_id=run_id)
    record = store.get_run(run_id)
    assert record.num_params == 10 and record.checkpoint_path == inside[0]
    assert all(count(store, t, run_id) >= 1 for t in CHILD_TABLES)

    with pytest.raises(StoreError, match="still queued; cancel it first"):
        store.delete_run(student.id)
    store.delete_run(run_id)

    assert all(count(store, t) == 0 for t in CHILD_TABLES)
    assert not any(p.exists() for p in inside)
    assert outside.read_bytes() == b"x"  # outside the data directory: never deleted
    assert store.get_run(student.id).teacher_run_id is None
    with pytest.raises(StoreError, match=f"Run {run_id} does not exist"):
        store.get_run(run_id)


def test_delete_dataset_removes_its_runs_and_files(store, tmp_path):
    keep = add_dataset(store, content_hash="keep")
    kept_run, kept_files = _run_with_children(store, keep, tmp_path / "a.bin")
    gone = add_dataset(store, content_hash="gone")
    parquet = paths.datasets_dir() / "gone.parquet"
    parquet.write_bytes(b"PAR1")
    with store.engine.begin() as conn:
        conn.execute(
            text("UPDATE datasets SET parquet_path = 'datasets/gone.parquet' WHERE id = :i"),
            {"i": gone},
        )
    gone_run, gone_files = _run_with_children(store, gone, tmp_path / "b.bin")
    busy = store.create_run(gone, "baseline", "mf", {})
    with pytest.raises(StoreError, match=f"queued or running runs \\(#{busy.id}\\)"):
        store.delete_dataset(gone)
    store.set_status(busy.id, "cancelled")

    store.delete_dataset(gone)
    assert [d.id for d in store.list_datasets()] == [keep]
    assert [r.id for r in store.list_runs()] == [kept_run]
    assert not parquet.exists() and not any(p.exists() for p in gone_files)
    assert all(p.exists() for p in kept_files)
    assert count(store, "epoch_metrics") == 1


def test_foreign_keys_are_enforced_by_the_database(store):
    with pytest.raises(IntegrityError), store.engine.begin() as conn:
        conn.execute(
            text("INSERT INTO tags (run_id, tag) VALUES (4242, 'orphan')"),
        )


# --------------------------------------------------------------------------- threads
def test_concurrent_writes_from_four_threads(store):
    dataset_id = add_dataset(store)
    start = threading.Barrier(4)
    errors: list[BaseException] = []
    run_ids: list[int] = []
    epochs = 25

    def work(worker: int) -> None:
        try:
            start.wait()
            run = store.create_run(dataset_id, "teacher", "mf", {"worker": worker})
            run_ids.append(run.id)
            store.set_status(run.id, "running")
            for epoch in range(1, epochs + 1):
                # Reads interleaved with writes: the classic SQLite lock-upgrade trap.
                store.list_runs(status="running")
                store.add_epoch(run.id, epoch, 1.0 / epoch, {"task": 1.0}, {"ndcg@10": 0.1}, 0.0)
            store.set_results(run.id, "test", [("ndcg", 10, worker / 10)])
            store.add_tag(run.id, f"w{worker}")
            store.set_status(run.id, "succeeded")
        except BaseException as exc:  # collected: a thread's exception would be lost
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(r.id for r in store.list_runs(status="succeeded")) == sorted(run_ids)
    for run_id in run_ids:
        assert [e.epoch for e in store.epochs(run_id)] == list(range(1, epochs + 1))
    assert count(store, "epoch_metrics") == 4 * epochs
    assert sorted(store.results_frame(run_ids)["value"]) == [0.0, 0.1, 0.2, 0.3]


def test_migrations_keep_every_run_child_and_link(store_url):
    """SQLite rebuilds a table to alter it; with foreign keys on, dropping the old table
    would cascade-delete every run's children and null the teacher links."""
    with Store() as store:
        dataset_id = add_dataset(store)
        teacher = store.create_run(dataset_id, "teacher", "mf", {"dim": 8})
        student = store.create_run(dataset_id, "student", "mf", {}, teacher_run_id=teacher.id)
        store.add_epoch(teacher.id, 1, 0.5, {"task": 0.5}, {"ndcg@10": 0.25}, 1.0)
        store.set_results(teacher.id, "test", [("ndcg", 10, 0.3)])
        for revision in ("0002", "0001", "head"):
            how = command.upgrade if revision == "head" else command.downgrade
            _migrate(store, how, revision)
            with store.engine.connect() as conn:
                link = conn.execute(
                    text("SELECT teacher_run_id FROM runs WHERE id = :id"), {"id": student.id}
                ).scalar()
                epochs = conn.execute(text("SELECT COUNT(*) FROM epoch_metrics")).scalar()
                results = conn.execute(text("SELECT COUNT(*) FROM results")).scalar()
            assert (link, epochs, results) == (teacher.id, 1, 1), revision
        assert store.results(teacher.id)["ndcg@10"] == pytest.approx(0.3)
