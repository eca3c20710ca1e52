"""The built-in demo shop: a deterministic, realistic e-commerce interaction log.

The app has to do something real on a fresh machine with no upload, and the demo has to
show why a sequence model (and a student distilled from it) beats a popularity ranking.
So the log is simulated from a small, readable model of a shop:

- a catalog of a few thousand products built combinatorially from per-category templates
  ("Trail Running Shoes Summit - Blue", "Crema Descaler Tablets (12 pack)"), with price
  bands per product type and Zipf-like popularity within each category;
- shoppers drawn from persona archetypes that mix two or three categories;
- sessions that walk an item-to-item graph ("customers who viewed this then viewed ..."),
  a view -> cart -> purchase funnel, accessories after main products *of the matching
  platform* (a Z-mount lens after a Z-mount body, games after a console), and consumables
  re-ordered at regular intervals (coffee beans, pet food, diapers);
- six months of timestamps ending at a fixed date, with daily rhythm and realistic gaps.

The catalog's product types, platforms and personas are data (demo_catalog.toml, read by
`core.ingestion.demo_catalog`, which builds the products); `core.ingestion.demo_shoppers`
simulates the shoppers; this module holds the config and puts the frames together.

Everything is a pure function of `DemoConfig`: one `numpy` PCG64 seed, no clock, no
global state, so the same config always gives byte-identical frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from core.errors import ConfigError
from core.files import bytes_sha256
from core.ingestion.demo_catalog import build_catalog, serial_ids
from core.ingestion.demo_shoppers import EVENT_TYPES, Simulation

# Bump whenever the generator's output changes for an unchanged config (the code here, in
# demo_catalog/demo_shoppers, or the data in demo_catalog.toml), so cached datasets keyed
# by `demo_content_hash` are not reused across generator versions.
GENERATOR_VERSION = 1
DEMO_NAME = "Demo shop"
MAX_SCALE = 100.0


@dataclass(frozen=True)
class DemoConfig:
    """Knobs of the demo generator; the defaults give ~150k events in a few seconds."""

    # Multiplies the number of shoppers; the catalog grows with sqrt(scale) because real
    # shops add customers much faster than products.
    scale: float = 1.0
    seed: int = 7
    # Shoppers and products at scale 1.0: enough for SASRec to learn the sequential
    # patterns, small enough to train a teacher in about a minute on two CPU cores.
    n_users: int = 5000
    n_items: int = 3000
    # A fixed end date (never "now") keeps the output reproducible.
    end_date: str = "2025-07-01"
    days: int = 181  # 2025-01-01 .. 2025-06-30
    # Mean number of browsing sessions per shopper (re-order visits come on top).
    sessions_per_user: float = 4.5
    # Zipf exponent of product popularity within a category: ~1 gives the long tail seen
    # in real shops (a few bestsellers, thousands of rarely viewed products).
    popularity_exponent: float = 1.0
    # Probability that the next view follows the item-to-item graph rather than the
    # category's bestseller list: the sequential signal popularity cannot capture.
    follow_related: float = 0.7
    # Probability that a shopper who just bought a main product goes on to view its
    # compatible accessories in the same session.
    cross_sell: float = 0.75
    # Probability that a later session starts from an accessory of a platform the shopper
    # owns (games for their console, lenses for their camera mount).
    follow_up: float = 0.35
    # Probability that a session (or a shopper's category choice) strays outside their
    # persona: real shoppers sometimes buy a gift.
    explore: float = 0.06

    def __post_init__(self) -> None:
        if not (0 < self.scale <= MAX_SCALE):
            raise ConfigError(f"Demo scale must be in (0, {MAX_SCALE:g}]; got {self.scale}.")
        if self.n_users < 10 or self.n_items < 200:
            raise ConfigError("The demo needs at least 10 shoppers and 200 products.")
        if self.days < 7:
            raise ConfigError("The demo window must cover at least 7 days.")
        if self.sessions_per_user <= 0:
            raise ConfigError("sessions_per_user must be positive.")
        probabilities = {
            "follow_related": self.follow_related,
            "cross_sell": self.cross_sell,
            "follow_up": self.follow_up,
            "explore": self.explore,
        }
        for name, value in probabilities.items():
            if not (0.0 <= value <= 1.0):
                raise ConfigError(f"{name} must be a probability in [0, 1]; got {value}.")
        if self.popularity_exponent < 0:
            raise ConfigError("popularity_exponent must be non-negative.")
        try:
            datetime.fromisoformat(self.end_date)
        except ValueError as exc:
            raise ConfigError(f"end_date {self.end_date!r} is not an ISO date.") from exc

    @property
    def user_count(self) -> int:
        return max(10, round(self.n_users * self.scale))

    @property
    def item_target(self) -> int:
        return max(200, round(self.n_items * math.sqrt(self.scale)))

    @property
    def end_timestamp(self) -> int:
        end = datetime.fromisoformat(self.end_date)
        if end.tzinfo is None:
            end = end.replace(tzinfo=UTC)
        return int(end.timestamp())

    @property
    def start_timestamp(self) -> int:
        return self.end_timestamp - self.days * 86400


def demo_content_hash(config: DemoConfig = DemoConfig()) -> str:
    """sha256 identifying the demo data a config produces (config repr + generator version)."""
    return bytes_sha256(f"distillery-demo/v{GENERATOR_VERSION}/{config!r}")


def generate_demo(config: DemoConfig = DemoConfig()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The demo shop's (interactions, catalog); a pure function of ``config``.

    interactions: user_id (str), item_id (str), timestamp (int64 unix seconds, increasing
    within each user), event ("view" / "cart" / "purchase"), sorted by time.
    catalog: item_id, title, category, price (float64, 2 decimals).
    """
    catalog_seq, user_seq = np.random.SeedSequence(config.seed).spawn(2)
    catalog = build_catalog(config, np.random.Generator(np.random.PCG64(catalog_seq)))
    sim = Simulation(config, catalog, np.random.Generator(np.random.PCG64(user_seq)))
    sim.run()

    users = np.frombuffer(sim.out_user, dtype=np.int64)
    items = np.frombuffer(sim.out_item, dtype=np.int64)
    times = np.floor(np.frombuffer(sim.out_time, dtype=np.float64)).astype(np.int64)
    events = np.frombuffer(sim.out_event, dtype=np.int8)
    inside = times < config.end_timestamp
    users, items, times, events = users[inside], items[inside], times[inside], events[inside]
    # A real log is ordered by time; ties (same second) keep the shopper's own order.
    order = np.lexsort((np.arange(len(times)), users, times))
    user_names = serial_ids("U", config.user_count)
    interactions = pd.DataFrame(
        {
            "user_id": pd.array(user_names[users[order]], dtype="str"),
            "item_id": pd.array(catalog.frame["item_id"].to_numpy()[items[order]], dtype="str"),
            "timestamp": times[order],
            "event": pd.array(np.array(EVENT_TYPES, dtype=object)[events[order]], dtype="str"),
        }
    )
    return interactions, catalog.frame
