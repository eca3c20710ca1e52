"""The demo shop's catalog: product types read from demo_catalog.toml, built into products.

`shop_spec` reads the data file once (categories, their product types and platforms, the
shopper personas). `build_catalog` turns it into a few thousand products with titles,
prices, Zipf-like popularity and an item-to-item successor graph, plus the lookup tables
the shopper simulation (`core.ingestion.demo_shoppers`) samples from. A pure function of
the config and a seeded generator, like the rest of `core.ingestion.demo`.
"""

from __future__ import annotations

import functools
import math
import re
import tomllib
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from core.ingestion.demo import DemoConfig

MAIN, ACCESSORY, CONSUMABLE, STANDALONE = "main", "accessory", "consumable", "standalone"
ROLES = (MAIN, ACCESSORY, CONSUMABLE, STANDALONE)
# Product types, categories and personas are data, not code (see the file's own comments).
CATALOG_FILE = Path(__file__).with_name("demo_catalog.toml")
_AXIS_REFERENCE = re.compile(r"(\w+)(?:\[:(\d+)\])?")
# Large scales outgrow the template combinations (~13k products); further products are
# editions of existing ones, which keeps titles unique up to ~75k products.
EDITIONS = ("", " (2025 Edition)", " (Limited Edition)", " (Refurbished)", " (Bundle)", " (Eco)")
N_SUCCESSORS = 4
# How likely each item-to-item successor is, strongest first: a few strong, specific
# transitions are what a sequence model learns and a popularity ranking cannot.
SUCCESSOR_P = (0.4, 0.27, 0.19, 0.14)


@dataclass(frozen=True)
class Kind:
    """One product type: a title template, its attribute axes and how it is bought.

    ``{line}`` in the template makes the type platform-bound: its products only fit the
    main products of the same line (mount, console, machine brand).
    """

    key: str
    template: str
    axes: tuple[tuple[str, ...], ...]
    price: tuple[float, float]
    role: str = STANDALONE
    weight: float = 1.0  # share of the category's catalog
    pairs: tuple[str, ...] = ()  # complementary types shoppers view next
    reorder_days: float = 0.0  # consumables: typical days between re-orders

    @property
    def lined(self) -> bool:
        return "{line}" in self.template


@dataclass(frozen=True)
class Category:
    name: str
    lines: tuple[str, ...]
    kinds: tuple[Kind, ...] = field(default_factory=tuple)


# Per persona archetype: (share of shoppers, ((category name, weight), ...)).
Personas = tuple[tuple[float, tuple[tuple[str, float], ...]], ...]


@dataclass(frozen=True)
class ShopSpec:
    """What demo_catalog.toml describes: the categories and the shopper personas."""

    categories: tuple[Category, ...]
    personas: Personas


@functools.cache
def shop_spec() -> ShopSpec:
    """The demo shop's catalog data, read from `CATALOG_FILE` once per process."""
    with CATALOG_FILE.open("rb") as handle:
        raw = tomllib.load(handle)
    shared: dict[str, list[str]] = raw["axes"]

    def axis(value: str | list[str]) -> tuple[str, ...]:
        if isinstance(value, list):
            return tuple(value)
        match = _AXIS_REFERENCE.fullmatch(value)
        if match is None or match[1] not in shared:
            raise ValueError(f"{CATALOG_FILE.name}: unknown axis {value!r}")
        return tuple(shared[match[1]][: int(match[2]) if match[2] else None])

    def kind(spec: dict[str, Any]) -> Kind:
        return Kind(
            **{
                **spec,
                "axes": tuple(axis(a) for a in spec["axes"]),
                "price": tuple(float(p) for p in spec["price"]),
                "pairs": tuple(spec.get("pairs", ())),
            }
        )

    categories = tuple(
        Category(c["name"], tuple(c["lines"]), tuple(kind(k) for k in c["kinds"]))
        for c in raw["category"]
    )
    personas = tuple(
        (float(p["share"]), tuple((name, float(w)) for name, w in p["mix"].items()))
        for p in raw["personas"]
    )
    _check_spec(categories, personas)
    return ShopSpec(categories, personas)


def _check_spec(categories: tuple[Category, ...], personas: Personas) -> None:
    """Catch a typo in the data file when it is read, not as a KeyError mid-simulation."""
    for cat in categories:
        keys = [k.key for k in cat.kinds]
        for k in cat.kinds:
            if k.role not in ROLES or set(k.pairs) - set(keys) or keys.count(k.key) > 1:
                raise ValueError(f"{CATALOG_FILE.name}: kind {cat.name}/{k.key} is inconsistent")
    names = {c.name for c in categories}
    for _, mix in personas:
        if unknown := {name for name, _ in mix} - names:
            raise ValueError(f"{CATALOG_FILE.name}: personas name unknown {sorted(unknown)}")


# --------------------------------------------------------------------------- catalog build


@dataclass(frozen=True, eq=False)
class Catalog:
    """The catalog plus the lookup tables the shopper simulation samples from."""

    frame: pd.DataFrame
    category: np.ndarray  # [n_items] category index
    role: list[str]
    line: np.ndarray  # [n_items] global line id, -1 when not platform-bound
    reorder_days: np.ndarray  # [n_items] float; 0 when not a consumable
    successors: list[list[int]]
    successor_cum: list[list[float]]
    category_items: list[list[int]]  # per category: item indices
    category_cum: list[list[float]]  # per category: cumulative entry popularity
    line_items: list[list[int]]  # per line: its accessories and consumables
    line_cum: list[list[float]]


def _allocate(targets: np.ndarray, caps: np.ndarray, total: int) -> np.ndarray:
    """Integer counts close to ``targets`` summing to ``min(total, caps.sum())``, each <= cap."""
    counts = np.zeros(len(targets), dtype=np.int64)
    remaining = min(total, int(caps.sum()))
    free = caps > 0
    weights = targets.astype(np.float64)
    while remaining > 0 and free.any():
        share = weights * free
        share = share / share.sum() * remaining
        room = caps - counts
        add = np.minimum(np.floor(share).astype(np.int64), room)
        if add.sum() == 0:  # hand out the rounding remainder, largest share first
            order = np.argsort(-(share - np.floor(share)) * free, kind="stable")
            for i in order[:remaining]:
                if room[i] > 0:
                    add[i] = 1
        counts += add
        remaining -= int(add.sum())
        free = counts < caps
    return counts


def build_catalog(config: DemoConfig, rng: np.random.Generator) -> Catalog:
    """The products of the demo shop and the tables shoppers are simulated from."""
    categories = shop_spec().categories
    kinds = [(c, kind) for c, cat in enumerate(categories) for kind in cat.kinds]
    caps = np.array(
        [
            math.prod(len(a) for a in kind.axes) * (len(categories[c].lines) if kind.lined else 1)
            for c, kind in kinds
        ],
        dtype=np.int64,
    )
    # Each category gets about the same share of products; within it, by type weight.
    cat_weight_sum = np.zeros(len(categories))
    for c, kind in kinds:
        cat_weight_sum[c] += kind.weight
    targets = np.array([kind.weight / cat_weight_sum[c] for c, kind in kinds])
    counts = _allocate(targets, caps, config.item_target)
    if counts.sum() < config.item_target:
        counts += _allocate(
            targets, caps * len(EDITIONS) - counts, config.item_target - int(counts.sum())
        )

    line_ids: dict[tuple[int, str], int] = {}
    for c, cat in enumerate(categories):
        for name in cat.lines:
            line_ids[(c, name)] = len(line_ids)

    titles: list[str] = []
    cats: list[int] = []
    kind_idx: list[int] = []
    lines: list[int] = []
    prices: list[float] = []
    for k, ((c, kind), n) in enumerate(zip(kinds, counts, strict=True)):
        if n == 0:
            continue
        sizes = [len(a) for a in kind.axes]
        line_names = categories[c].lines if kind.lined else ("",)
        per_line = math.prod(sizes)
        # Spread a platform-bound type evenly over its lines so every line has some.
        base, extra = divmod(int(n), len(line_names))
        for li, line_name in enumerate(line_names):
            m = base + (1 if li < extra else 0)
            if m == 0:
                continue
            picks = np.sort(rng.choice(per_line, size=min(m, per_line), replace=False))
            if m > per_line:
                more = rng.choice(per_line * (len(EDITIONS) - 1), size=m - per_line, replace=False)
                picks = np.concatenate([np.arange(per_line), per_line + np.sort(more)])
            for pick in picks.tolist():
                edition, combo = divmod(pick, per_line)
                idx = np.unravel_index(combo, sizes)
                values = {chr(ord("a") + j): kind.axes[j][v] for j, v in enumerate(idx)}
                titles.append(kind.template.format(line=line_name, **values) + EDITIONS[edition])
                cats.append(c)
                kind_idx.append(k)
                lines.append(line_ids[(c, line_name)] if kind.lined else -1)
        lo, hi = kind.price
        raw = np.exp(rng.uniform(math.log(lo), math.log(hi), size=int(n)))
        # Shop prices end in .99 (or .49 for cheap items) rather than arbitrary cents.
        prices.extend(np.where(raw >= 10, np.floor(raw) + 0.99, np.floor(raw) + 0.49).tolist())

    n_items = len(titles)
    if len(set(titles)) != n_items:  # a template bug, never a user error
        raise AssertionError("demo catalog titles are not unique")
    category = np.array(cats, dtype=np.int64)
    kind_arr = np.array(kind_idx, dtype=np.int64)
    line = np.array(lines, dtype=np.int64)
    role = [kinds[k][1].role for k in kind_idx]
    reorder_days = np.array([kinds[k][1].reorder_days for k in kind_idx], dtype=np.float64)

    # Zipf-like popularity by a random rank within each category.
    popularity = np.zeros(n_items)
    for c in range(len(categories)):
        members = np.flatnonzero(category == c)
        ranks = rng.permutation(len(members))
        popularity[members] = 1.0 / (ranks + 1.0) ** config.popularity_exponent

    successors, successor_cum = _successor_graph(rng, kinds, category, kind_arr, line, popularity)

    # Shoppers rarely land on a platform-bound accessory without owning the platform.
    entry = popularity * np.where(line >= 0, np.where(np.array(role) == MAIN, 1.0, 0.3), 1.0)
    category_items, category_cum = [], []
    for c in range(len(categories)):
        members = np.flatnonzero(category == c)
        category_items.append(members.tolist())
        category_cum.append(list(accumulate(entry[members].tolist())))
    line_items, line_cum = [], []
    is_main = np.array(role) == MAIN
    for lid in range(len(line_ids)):
        members = np.flatnonzero((line == lid) & ~is_main)
        line_items.append(members.tolist())
        line_cum.append(list(accumulate(popularity[members].tolist())))

    frame = pd.DataFrame(
        {
            "item_id": pd.array(serial_ids("P", n_items), dtype="str"),
            "title": pd.array(titles, dtype="str"),
            "category": pd.array([categories[c].name for c in cats], dtype="str"),
            "price": np.round(np.array(prices, dtype=np.float64), 2),
        }
    )
    return Catalog(
        frame=frame,
        category=category,
        role=role,
        line=line,
        reorder_days=reorder_days,
        successors=successors,
        successor_cum=successor_cum,
        category_items=category_items,
        category_cum=category_cum,
        line_items=line_items,
        line_cum=line_cum,
    )


def _successor_graph(
    rng: np.random.Generator,
    kinds: list[tuple[int, Kind]],
    category: np.ndarray,
    kind_arr: np.ndarray,
    line: np.ndarray,
    popularity: np.ndarray,
) -> tuple[list[list[int]], list[list[float]]]:
    """Per item, a few fixed successors ("viewed this, then viewed ...") and their odds.

    Successors are similar items of the same type or items of complementary types, drawn
    with popularity weight so the graph keeps the long tail; platform-bound items only
    lead to items of the same platform (or to platform-free ones).
    """
    key_to_kind = {(c, kind.key): k for k, (c, kind) in enumerate(kinds)}
    by_kind = {k: np.flatnonzero(kind_arr == k) for k in range(len(kinds))}
    successors: list[list[int]] = []
    successor_cum: list[list[float]] = []
    for i in range(len(category)):
        c, kind = kinds[kind_arr[i]]
        boost = {kind_arr[i]: 1.0}
        for key in kind.pairs:
            # complementary types weigh more than near-duplicates of the item itself
            boost[key_to_kind[(c, key)]] = 3.0
        pool = np.concatenate([by_kind[k] for k in boost])
        weight = popularity[pool] * np.repeat(
            list(boost.values()), [len(by_kind[k]) for k in boost]
        )
        keep = pool != i
        if line[i] >= 0:
            keep &= (line[pool] == line[i]) | (line[pool] < 0)
        pool, weight = pool[keep], weight[keep]
        size = min(N_SUCCESSORS, len(pool))
        if size == 0:
            successors.append([])
            successor_cum.append([])
            continue
        chosen = rng.choice(pool, size=size, replace=False, p=weight / weight.sum())
        successors.append(chosen.tolist())
        successor_cum.append(list(accumulate(SUCCESSOR_P[:size])))
    return successors, successor_cum


def serial_ids(prefix: str, n: int) -> np.ndarray:
    """``P00000``, ``P00001``, ...: zero-padded ids that sort in creation order."""
    width = max(5, len(str(n - 1)))
    return np.array([f"{prefix}{i:0{width}d}" for i in range(n)], dtype=object)
