"""The handoff bundle: one zip with the ONNX files, the item map, the model card and metrics.

The zip is deterministic: entries in a fixed order with a fixed timestamp and mode, so the
same store state gives the same bytes (a serving team can compare two bundles by hash).
It is built from the store only, when asked for (the Handoff page builds it when its
download button is clicked).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from core import paths
from core.errors import ConfigError
from core.files import atomic_write_bytes
from core.serving.card import metrics_json, model_card
from core.serving.facts import collect_facts
from core.serving.gates import Gates
from core.serving.prepare import ARTIFACT_KINDS, INT8_FILE, ITEM_MAP_FILE, ONNX_FILE
from core.store import Store

CARD_MD, CARD_JSON, METRICS_JSON = "model_card.md", "model_card.json", "metrics.json"
BUNDLE_FILES = (ONNX_FILE, INT8_FILE, ITEM_MAP_FILE, CARD_MD, CARD_JSON, METRICS_JSON)
# Fixed zip entry timestamp: the same files make the same bundle bytes.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def bundle_path(run_id: int, handoff: str = "fp32") -> Path:
    return paths.bundles_dir() / f"distillery-run-{int(run_id):06d}-{handoff}-handoff.zip"


def _add(archive: zipfile.ZipFile, name: str, payload: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    archive.writestr(info, payload)


def _prepared_files(store: Store, run_id: int) -> dict[str, Path]:
    return {a.path.name: a.path for a in store.artifacts(run_id) if a.path.name in ARTIFACT_KINDS}


def missing_files(store: Store, run_id: int) -> list[str]:
    """The prepared files of the run that are not on disk (all of them before a preparation)."""
    files = _prepared_files(store, run_id)
    return [name for name in ARTIFACT_KINDS if not (name in files and files[name].exists())]


def _json_bytes(value: object) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()


def bundle_bytes(
    store: Store, run_id: int, *, handoff: str = "fp32", gates: Gates | None = None, k: int = 10
) -> bytes:
    """The zip of ``BUNDLE_FILES`` (in that order), as bytes.

    Needs a prepared run (``core.serving.prepare.prepare_handoff``); the card is rendered
    from the store with ``gates`` (defaults when None).
    """
    facts = collect_facts(store, run_id, handoff=handoff, k=k)
    files = _prepared_files(store, run_id)
    missing = missing_files(store, run_id)
    if missing or not facts.is_prepared:
        raise ConfigError(
            f"Run #{run_id} has not been prepared for handoff (missing {', '.join(missing) or 'the parity check'}); press Prepare handoff first."
        )
    markdown, card = model_card(facts, gates or Gates())
    generated = {
        CARD_MD: markdown.encode(),
        CARD_JSON: _json_bytes(card),
        METRICS_JSON: _json_bytes(metrics_json(store, run_id)),
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in BUNDLE_FILES:
            _add(archive, name, generated[name] if name in generated else files[name].read_bytes())
    return buffer.getvalue()


def write_bundle(
    store: Store, run_id: int, *, handoff: str = "fp32", gates: Gates | None = None, k: int = 10
) -> Path:
    """:func:`bundle_bytes` written atomically to ``bundle_path`` (in ``paths.bundles_dir()``)."""
    payload = bundle_bytes(store, run_id, handoff=handoff, gates=gates, k=k)
    return atomic_write_bytes(bundle_path(run_id, handoff), payload)
