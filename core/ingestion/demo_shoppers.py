"""The demo shop's shoppers: sessions simulated over the catalog, one event at a time.

Shoppers are drawn from persona archetypes that mix two or three categories. A session
walks the item-to-item graph ("customers who viewed this then viewed ..."), goes through a
view -> cart -> purchase funnel, follows a main product with accessories of its platform,
and consumables come back as re-orders at regular intervals. Every draw comes from one
seeded uniform stream, in a fixed order, so the output is a pure function of the config.
"""

from __future__ import annotations

import bisect
import math
from array import array
from collections.abc import Callable, Iterator
from itertools import accumulate, chain
from typing import TYPE_CHECKING

import numpy as np

from core.ingestion.demo_catalog import ACCESSORY, CONSUMABLE, MAIN, STANDALONE, Catalog, shop_spec

if TYPE_CHECKING:
    from core.ingestion.demo import DemoConfig

EVENT_TYPES = ("view", "cart", "purchase")
VIEW, CART, PURCHASE = 0, 1, 2
# Chance that a view turns into an add-to-cart, by role: cheap add-ons convert more
# often than expensive main products.
CART_RATE = {MAIN: 0.06, ACCESSORY: 0.16, CONSUMABLE: 0.22, STANDALONE: 0.10}
BUY_AFTER_CART = 0.6
# Chance that a due re-order does not happen (switched brand, no longer needed).
CHURN = 0.12
# Shoppers come back most in the evening, least at night (hour-of-day weights, UTC).
HOURLY = (1, 0.6, 0.4, 0.3, 0.3, 0.5, 1, 2, 3, 3.5, 3.5, 4, 5, 4.5, 4, 4, 4.5, 5, 6, 7, 7.5, 6.5, 4, 2)  # fmt: skip


def _uniforms(rng: np.random.Generator, block: int = 1 << 16) -> Callable[[], float]:
    """A function returning the next U[0, 1) draw of ``rng``, fetched in blocks.

    Per-call numpy draws cost microseconds each and the simulation needs about a million;
    a C-level iterator over pre-drawn blocks costs tens of nanoseconds.
    """

    def blocks() -> Iterator[list[float]]:
        while True:
            yield rng.random(block).tolist()

    return chain.from_iterable(blocks()).__next__


def _pick(items: list[int], cum: list[float], u: float) -> int:
    return items[min(bisect.bisect_right(cum, u * cum[-1]), len(items) - 1)]


class _Shopper:
    """Simulates one shopper's sessions; appends (item, time, event) to shared lists."""

    def __init__(self, sim: Simulation, user: int, cat_items: list[int], cat_cum: list[float]):
        self.sim = sim
        self.user = user
        self.cat_items = cat_items  # the categories this shopper visits ...
        self.cat_cum = cat_cum  # ... and how often
        self.seen: set[int] = set()
        self.owned_lines: list[int] = []
        self.due: list[tuple[float, int]] = []  # consumables to re-order: (time, item)
        self.t = 0.0

    def emit(self, item: int, event: int, gap: float) -> None:
        self.t += gap
        sim = self.sim
        sim.out_user.append(self.user)
        sim.out_item.append(item)
        sim.out_time.append(self.t)
        sim.out_event.append(event)
        self.seen.add(item)

    def fresh(self, items: list[int], cum: list[float]) -> int:
        """A weighted pick from ``items``, re-drawn a few times to avoid already-seen ones.

        Shoppers do revisit products, but mostly they look at new ones; the project's
        evaluation masks a shopper's history, so revisits must stay a minority.
        """
        u = self.sim.u
        item = _pick(items, cum, u())
        for _ in range(4):
            if item not in self.seen:
                break
            item = _pick(items, cum, u())
        return item

    def popular_in(self, category: int) -> int:
        cat = self.sim.catalog
        return self.fresh(cat.category_items[category], cat.category_cum[category])

    def next_item(self, current: int, category: int) -> int:
        cat = self.sim.catalog
        succ = cat.successors[current]
        if succ and self.sim.u() < self.sim.config.follow_related:
            item = self.fresh(succ, cat.successor_cum[current])
            if item not in self.seen:
                return item
        return self.popular_in(category)

    def buy(self, item: int) -> None:
        cat = self.sim.catalog
        days = cat.reorder_days[item]
        if days > 0:
            # One schedule per consumable: buying it early resets the clock.
            jitter = math.exp(0.25 * (2.0 * self.sim.u() - 1.0))
            self.due = [d for d in self.due if d[1] != item]
            self.due.append((self.t + days * 86400 * jitter, item))
            self.due.sort()
        if cat.role[item] == MAIN and cat.line[item] >= 0:
            line = int(cat.line[item])
            if line not in self.owned_lines:
                self.owned_lines.append(line)

    def funnel(self, item: int) -> int:
        """View -> cart -> purchase for one viewed item: VIEW (no action), CART or PURCHASE."""
        sim, u = self.sim, self.sim.u
        if u() >= CART_RATE[sim.catalog.role[item]]:
            return VIEW
        self.emit(item, CART, 15 + 90 * u())
        if u() >= BUY_AFTER_CART:
            return CART
        self.emit(item, PURCHASE, 60 + 300 * u())
        self.buy(item)
        return PURCHASE

    def browse(self, start: float, reordered: int | None = None) -> None:
        """A session: a walk over the item graph with occasional purchases.

        ``reordered`` makes it a re-order visit for that consumable ("buy again"), which
        may lead on to a little browsing.
        """
        sim, cat, u = self.sim, self.sim.catalog, self.sim.u
        self.t = start
        if reordered is not None:
            if u() < 0.3:
                self.emit(reordered, VIEW, 0.0)
                self.emit(reordered, CART, 10 + 40 * u())
            else:
                self.emit(reordered, CART, 0.0)
            self.emit(reordered, PURCHASE, 40 + 200 * u())
            self.buy(reordered)
            if u() < 0.1:
                return
            category = int(cat.category[reordered])
            current = self.next_item(reordered, category)
        else:
            current = None
            if self.owned_lines and u() < sim.config.follow_up:
                # Back for more for the platform they own: games, lenses, pods.
                line = self.owned_lines[-1] if u() < 0.6 else self.owned_lines[0]
                if cat.line_items[line]:
                    current = self.fresh(cat.line_items[line], cat.line_cum[line])
            if current is None:
                current = self.popular_in(self.pick_category())
            category = int(cat.category[current])
        self.emit(current, VIEW, 0.0 if reordered is None else 8 + 110 * u() ** 2)
        for step in range(30):
            outcome = self.funnel(current)
            # Shoppers rarely leave right after adding to the cart: they check out, look
            # at the "goes well with" row, keep browsing; a bounce ends plain views.
            stop = 0.08 if outcome != VIEW else (0.1 if step == 0 else 0.3)
            if u() < stop:
                break
            line = int(cat.line[current])
            if (
                outcome == PURCHASE
                and cat.role[current] == MAIN
                and line >= 0
                and cat.line_items[line]
                and u() < sim.config.cross_sell
            ):
                current = self.fresh(cat.line_items[line], cat.line_cum[line])
            else:
                current = self.next_item(current, category)
            self.emit(current, VIEW, 8 + 110 * u() ** 2)

    def pick_category(self) -> int:
        u = self.sim.u
        if u() < self.sim.config.explore:
            return int(u() * self.sim.n_categories)
        return _pick(self.cat_items, self.cat_cum, u())

    def run(self) -> None:
        sim, u = self.sim, self.sim.u
        start, end = sim.start, sim.end
        # Heavy-tailed activity: most shoppers come a few times, some very often.
        # (log-normal with the configured mean, at least two visits).
        mu = math.log(sim.config.sessions_per_user) - 0.5 * 0.8**2
        sessions = max(2, round(math.exp(mu + 0.8 * sim.normal())))
        gap_days = math.exp(math.log(7.0) + 0.6 * sim.normal())
        span = sessions * gap_days * 86400
        first = start + u() * max(0.0, (end - start) - span)
        t = math.floor(first / 86400) * 86400.0 + sim.hour_of_day() * 3600.0
        last = -math.inf
        done = 0
        while done < sessions:
            if self.due and self.due[0][0] < t:
                due_t, item = self.due.pop(0)
                if due_t >= end - 3600:
                    self.due.clear()
                    continue
                if u() < CHURN:
                    continue
                self.browse(max(due_t, last + 600), reordered=item)
                last = self.t
                continue
            if t >= end - 3600:
                break
            self.browse(max(t, last + 600))
            last = self.t
            done += 1
            day = math.floor((last + -math.log(1.0 - u()) * gap_days * 86400) / 86400)
            t = day * 86400.0 + sim.hour_of_day() * 3600.0
        # Scheduled re-orders keep coming after the last browsing visit.
        while self.due:
            due_t, item = self.due.pop(0)
            if due_t >= end - 3600:
                break
            if u() < CHURN:
                continue
            self.browse(max(due_t, last + 600), reordered=item)
            last = self.t


class Simulation:
    """All shoppers of one demo shop; their events collect in typed arrays (``out_*``)."""

    def __init__(self, config: DemoConfig, catalog: Catalog, rng: np.random.Generator):
        self.config = config
        self.catalog = catalog
        self.u = _uniforms(rng)
        self.start = float(config.start_timestamp)
        self.end = float(config.end_timestamp)
        self.hour_cum = list(accumulate(HOURLY))
        spec = shop_spec()
        self.n_categories = len(spec.categories)
        self.personas = spec.personas
        self.persona_cum = list(accumulate(share for share, _ in spec.personas))
        names = [c.name for c in spec.categories]
        self.persona_categories = [[names.index(n) for n, _ in mix] for _, mix in spec.personas]
        # Typed arrays: millions of events at large scales would not fit as Python lists.
        self.out_user = array("q")
        self.out_item = array("q")
        self.out_time = array("d")
        self.out_event = array("b")

    def normal(self) -> float:
        # Box-Muller on the shared uniform stream keeps every draw in one sequence.
        u1, u2 = self.u(), self.u()
        return math.sqrt(-2.0 * math.log(1.0 - u1)) * math.cos(2.0 * math.pi * u2)

    def hour_of_day(self) -> float:
        hour = bisect.bisect_right(self.hour_cum, self.u() * self.hour_cum[-1])
        return min(hour, 23) + self.u()

    def persona(self) -> tuple[list[int], list[float]]:
        """A shopper's categories and their cumulative weights, from a random archetype."""
        p = bisect.bisect_right(self.persona_cum, self.u() * self.persona_cum[-1])
        # Each shopper leans a little differently within the archetype.
        weights = [w * (0.5 + self.u()) for _, w in self.personas[p][1]]
        return self.persona_categories[p], list(accumulate(weights))

    def run(self) -> None:
        for user in range(self.config.user_count):
            items, cum = self.persona()
            _Shopper(self, user, items, cum).run()
