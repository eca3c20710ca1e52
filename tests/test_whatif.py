"""core.views.whatif: building a what-if shopping session and each model's next-item lists."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pytest
import torch

from core.dataset import pad_sequences
from core.errors import ConfigError
from core.ingestion.registry import load_dataset
from core.models import ModelConfig, build_model
from core.records import RunRecord
from core.runner import run_model
from core.store import Store
from core.views import recommendations as recs
from core.views import whatif
from tests.factories import sequences_dataset


def _record(run_id: int, name: str, role: str = "student", model: str = "sasrec") -> RunRecord:
    return RunRecord(
        id=run_id, dataset_id=1, role=role, model=model, config={}, status="succeeded",
        name=name, teacher_run_id=None, error=None, notes=None, created=datetime.now(UTC),
        started=None, finished=None, num_params=0, checkpoint_path=None, onnx_path=None, tags=(),
    )  # fmt: skip


def _catalog():
    data = sequences_dataset([[0, 1, 2, 3], [1, 2, 3, 0], [3, 3, 3, 1]], n_items=5)
    titles = np.array(
        ["USB-C Cable", "Running Shoes", "cable organiser", "Phone case", "Braided usb cable"],
        dtype=object,
    )
    return replace(data, titles=titles)


@pytest.fixture
def seeded(seeded_home):
    _, ids = seeded_home
    store = Store()
    yield store, ids, load_dataset(store, ids["dataset"])
    store.close()


# --------------------------------------------------------------------------- building
def test_search_is_case_insensitive_and_ranks_prefixes_then_popularity():
    data = _catalog()
    assert data.item_popularity[0] > data.item_popularity[4]  # 1 training interaction vs none
    # "cable" starts title 2 (the prefix match comes first), then the others by popularity.
    assert whatif.search_products(data, "  CABLE ") == [2, 0, 4]
    assert whatif.search_products(data, "usb") == [0, 4]
    assert whatif.search_products(data, "cable", limit=1) == [2]
    assert whatif.search_products(data, "i3") == [3]  # an exact item id
    assert whatif.search_products(data, "nothing like it") == []
    assert whatif.search_products(data, "   ") == []


def test_user_session_is_the_history_the_test_ranking_sees_oldest_first():
    data = _catalog()
    assert whatif.user_session(data, 0) == (0, 1, 2)  # train + valid; test item 3 held out
    assert whatif.user_session(data, 2) == (3, 3, 3)
    assert whatif.user_session(data, 2, n=1) == (3,)


def test_edits_are_pure_and_bounded():
    session = (1, 2, 3)
    assert whatif.add_item(session, 4) == (1, 2, 3, 4) and session == (1, 2, 3)
    assert whatif.add_item(session, 4, limit=3) == (2, 3, 4)  # the oldest falls off
    assert whatif.remove_at(session, 1) == (1, 3)
    assert whatif.remove_at(session, 7) == session
    assert whatif.move(session, 0, 1) == (2, 1, 3)
    assert whatif.move(session, 2, -1) == (1, 3, 2)
    assert whatif.move(session, 0, -1) == session and whatif.move(session, 2, 1) == session
    frame = whatif.session_frame(_catalog(), (4, 0))
    assert frame["position"].tolist() == [1, 2]
    assert frame["title"].tolist() == ["Braided usb cable", "USB-C Cable"]


def test_empty_and_unknown_sessions_get_one_sentence():
    data = _catalog()
    with pytest.raises(ConfigError, match="session is empty"):
        whatif.check_session(data, ())
    with pytest.raises(ConfigError, match="Product 9 is not in this dataset's catalog"):
        whatif.check_session(data, (1, 9))
    with pytest.raises(ConfigError, match="session is empty"):
        whatif.session_lists(data, [], [])
    assert whatif.check_session(data, [np.int64(2), 1]) == (2, 1)


# --------------------------------------------------------------------------- scoring
def test_session_context_pads_like_make_context():
    data = _catalog()
    model = build_model(ModelConfig(family="sasrec", dim=8, heads=1, max_len=4), 3, 5)
    context = whatif.session_context(model, (2, 0, 1))
    assert context.tolist() == [[0, 3, 1, 2]]  # left-padded, item + 1
    user = model.make_context(data, np.array([0]), "test")
    assert torch.equal(whatif.session_context(model, whatif.user_session(data, 0)), user)
    popularity = build_model(ModelConfig(family="popularity"), 3, 5)
    assert whatif.session_context(popularity, (2, 0)).shape == (1,)


def test_masked_datasets_exclude_the_session_and_drop_empty_slots():
    data = replace(_catalog(), history_mask="on")
    model = build_model(ModelConfig(family="popularity"), data.n_users, data.n_items)
    model.fit_statistics(data)
    items, ms = whatif.recommend_session(model, data, (3, 1, 2), k=10)
    assert items == [0, 4] and ms >= 0  # the session's three items are never offered
    unmasked, _ = whatif.recommend_session(model, replace(data, history_mask="off"), (3,), k=10)
    assert sorted(unmasked) == [0, 1, 2, 3, 4]  # "buy again" stays possible


def test_session_lists_name_user_models_and_keep_popularity_as_the_floor():
    data = _catalog()
    seq = build_model(ModelConfig(family="sasrec", dim=8, heads=1, max_len=4), 3, 5)
    mf = build_model(ModelConfig(family="mf", dim=4), 3, 5)
    popularity = build_model(ModelConfig(family="popularity"), 3, 5)
    popularity.fit_statistics(data)
    models = [
        (_record(1, "pop", "popularity", "popularity"), popularity),
        (_record(2, "mf", "teacher", "mf"), mf),
        (_record(3, "seq"), seq),
    ]
    result = whatif.session_lists(data, (1, 2), models, k=3)
    assert result.user_models == ["#2 mf"]
    # The sequence model is the reference even though popularity came first.
    assert [r.run_id for r in result.lists] == [3, 1]
    reference, floor = result.lists
    assert reference.jaccard is None and reference.items["shared"].all() and reference.note == ""
    assert floor.note == "the same for every session"
    assert floor.jaccard == pytest.approx(recs.jaccard(floor.item_indices, reference.item_indices))
    assert floor.items["in_session"].tolist() == [i in (1, 2) for i in floor.item_indices]
    assert floor.items["title"].tolist() == [str(data.titles[i]) for i in floor.item_indices]


def test_a_users_history_as_a_session_gives_that_users_test_list(seeded):
    store, ids, data = seeded
    runs = [store.get_run(ids[n]) for n in ("teacher", "student-soft", "popularity")]
    models = recs.load_models(store, runs)
    users = [recs.user_index(data, raw) for raw in recs.find_users(data)]
    # Whole histories only: then the session and the user are one and the same context.
    short = [u for u in users if len(data.history_sequences("test")[u]) <= whatif.MAX_SESSION]
    checked = 0
    for evaluated in (data, replace(data, history_mask="on")):
        for user in short[:3]:
            result = whatif.session_lists(evaluated, whatif.user_session(evaluated, user), models)
            assert [r.run_id for r in result.lists] == [r.id for r in runs]
            for (_, model), rec in zip(models, result.lists, strict=True):
                expected, _ = recs.recommend(model, evaluated, user)
                assert list(rec.item_indices) == expected, rec.title
                checked += 1
    assert checked == 2 * 3 * len(runs)


def test_pad_sequences_is_what_the_session_context_uses(seeded):
    store, ids, data = seeded
    model = run_model(store, store.get_run(ids["teacher"]))
    session = whatif.search_products(data, "a")[:3]
    expected = pad_sequences([np.asarray(session)], model.config.max_len)
    assert whatif.session_context(model, session).numpy().tolist() == expected.tolist()
