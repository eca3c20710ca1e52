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

Everything is a pure function of `DemoConfig`: one `numpy` PCG64 seed, no clock, no
global state, so the same config always gives byte-identical frames.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import accumulate, chain

import numpy as np
import pandas as pd

from core.errors import ConfigError

# Bump whenever the generator's output changes for an unchanged config, so cached
# datasets keyed by `demo_content_hash` are not reused across generator versions.
GENERATOR_VERSION = 1
DEMO_NAME = "Demo shop"
EVENT_TYPES = ("view", "cart", "purchase")
VIEW, CART, PURCHASE = 0, 1, 2
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
    text = f"distillery-demo/v{GENERATOR_VERSION}/{config!r}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- catalog spec

MAIN, ACCESSORY, CONSUMABLE, STANDALONE = "main", "accessory", "consumable", "standalone"
# Chance that a view turns into an add-to-cart, by role: cheap add-ons convert more
# often than expensive main products.
CART_RATE = {MAIN: 0.06, ACCESSORY: 0.16, CONSUMABLE: 0.22, STANDALONE: 0.10}
BUY_AFTER_CART = 0.6
# Chance that a due re-order does not happen (switched brand, no longer needed).
CHURN = 0.12

COLOURS = (
    "Black", "White", "Blue", "Red", "Green", "Grey", "Navy", "Orange",
    "Yellow", "Pink", "Purple", "Teal", "Olive", "Sand", "Burgundy", "Charcoal",
)  # fmt: skip
MODELS = (
    "Aero", "Apex", "Summit", "Ridge", "Vector", "Nimbus", "Terra", "Nova",
    "Vela", "Strato", "Luma", "Orbit", "Zenith", "Kestrel", "Falcon", "Cobalt",
    "Atlas", "Ember", "Pulse", "Glide", "Drift", "Horizon", "Quest", "Tempo",
)  # fmt: skip


@dataclass(frozen=True)
class _Kind:
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
class _Category:
    name: str
    lines: tuple[str, ...]
    kinds: tuple[_Kind, ...] = field(default_factory=tuple)


def _k(key, template, axes, price, role=STANDALONE, weight=1.0, pairs=(), reorder=0.0) -> _Kind:
    return _Kind(key, template, tuple(axes), price, role, weight, tuple(pairs), reorder)


CATEGORIES: tuple[_Category, ...] = (
    _Category("Running", ("PacePro", "Stridewise", "Kairo"), (
        _k("watch", "{line} GPS Running Watch {a}", [("Sport", "Pro", "Elite", "Trail", "Solar", "Lite", "Plus", "Max")], (149, 599), MAIN, 0.6, ("strap", "charger", "hrm")),
        _k("strap", "{line} Replacement Watch Strap - {a}", [COLOURS], (14, 39), ACCESSORY, 0.8, ("charger", "hrm")),
        _k("charger", "{line} Charging Cable {a}", [("1 m", "2 m", "Dock", "Travel Clip")], (12, 29), ACCESSORY, 0.4, ("strap",)),
        _k("hrm", "Heart Rate Chest Strap {a}", [MODELS], (39, 99), ACCESSORY, 0.5, ("watch",)),
        _k("trail", "Trail Running Shoes {a} - {b}", [MODELS, COLOURS], (79, 189), STANDALONE, 2.0, ("socks", "vest", "gels")),
        _k("road", "Road Running Shoes {a} - {b}", [MODELS, COLOURS], (69, 179), STANDALONE, 2.0, ("socks", "shorts", "gels")),
        _k("socks", "Running Socks {a} (3 pack) - {b}", [("Cushioned", "Lightweight", "Merino", "Compression", "Ankle", "Crew"), COLOURS], (12, 29), STANDALONE, 1.0, ("shorts", "gels")),
        _k("gels", "Energy Gels {a} (12 pack)", [("Lemon", "Berry", "Salted Caramel", "Espresso", "Orange", "Mango", "Cola", "Raspberry", "Vanilla", "Apple", "Cherry", "Ginger")], (15, 29), CONSUMABLE, 0.6, ("vest", "socks"), 21),
        _k("vest", "Hydration Vest {a} {b}", [MODELS, ("5 L", "8 L", "12 L")], (59, 149), STANDALONE, 0.7, ("gels",)),
        _k("shorts", "Running Shorts {a} - {b}", [MODELS, COLOURS], (25, 59), STANDALONE, 1.0, ("socks", "road")),
    )),
    _Category("Coffee", ("Crema", "Milano", "Barista", "Torino"), (
        _k("machine", "{line} Espresso Machine {a}", [("15 bar", "19 bar", "Dual Boiler", "Compact", "Pro", "Touch", "Classic", "Plus")], (199, 1299), MAIN, 0.6, ("descaler", "basket", "tamper", "jug", "grinder")),
        _k("descaler", "{line} Descaler Tablets ({a})", [("6 pack", "12 pack", "24 pack")], (9, 24), CONSUMABLE, 0.4, ("basket", "tamper"), 60),
        _k("basket", "{line} Portafilter Basket {a}", [("Single Shot", "Double Shot", "Triple Shot", "Pressurised", "Precision 18 g", "Precision 20 g")], (14, 39), ACCESSORY, 0.5, ("tamper", "descaler")),
        _k("tamper", "{line} Espresso Tamper {a}", [("51 mm", "54 mm", "58 mm", "Calibrated", "Wooden Handle")], (19, 59), ACCESSORY, 0.5, ("basket", "jug")),
        _k("jug", "Milk Frothing Jug {a} - {b}", [("350 ml", "600 ml", "900 ml"), ("Steel", "Black", "Copper", "White", "Matte Grey")], (15, 39), ACCESSORY, 0.6, ("beans", "tamper")),
        _k("grinder", "Burr Grinder {a} {b}", [MODELS, ("Conical", "Flat", "Hand")], (49, 399), STANDALONE, 0.8, ("beans", "machine")),
        _k("beans", "Coffee Beans {a} {b} 1 kg", [("Ethiopia Yirgacheffe", "Colombia Huila", "Brazil Cerrado", "Guatemala Antigua", "Kenya AA", "Sumatra Mandheling", "Costa Rica Tarrazu", "Peru Cajamarca", "Rwanda Nyamasheke", "House Blend", "Decaf Blend", "Espresso Blend"), ("Light Roast", "Medium Roast", "Dark Roast")], (18, 39), CONSUMABLE, 1.5, ("grinder", "filters", "dripper"), 21),
        _k("dripper", "Pour-Over Dripper {a} - {b}", [("Ceramic", "Glass", "Steel", "Plastic"), ("Size 01", "Size 02", "Flat Bottom")], (15, 49), STANDALONE, 0.6, ("filters", "beans")),
        _k("filters", "Paper Coffee Filters {a} (100 pack)", [("Size 01", "Size 02", "Flat Bottom", "Unbleached 01", "Unbleached 02")], (4, 9), CONSUMABLE, 0.3, ("beans",), 45),
    )),
    _Category("Kitchen", ("KitchenPro", "Mixa", "Bakewell"), (
        _k("mixer", "{line} Stand Mixer {a} - {b}", [("4.5 L", "5 L", "6 L"), COLOURS], (199, 649), MAIN, 0.8, ("attachment",)),
        _k("attachment", "{line} Mixer {a}", [("Dough Hook", "Flat Beater", "Wire Whisk", "Pasta Roller", "Meat Grinder Attachment", "Spiralizer Attachment", "Extra Bowl 5 L", "Pouring Shield", "Ice Cream Maker Bowl", "Flex Edge Beater")], (19, 129), ACCESSORY, 1.0, ("attachment",)),
        _k("knife", "Chef's Knife {a} {b}", [MODELS, ("15 cm", "20 cm", "23 cm")], (29, 189), STANDALONE, 1.5, ("board", "sharpener")),
        _k("skillet", "Cast Iron Skillet {a} {b}", [("20 cm", "25 cm", "30 cm"), ("Pre-seasoned", "Enamelled Red", "Enamelled Blue", "Enamelled Black", "Enamelled Cream")], (29, 99), STANDALONE, 1.0, ("board", "containers")),
        _k("board", "Cutting Board {a} - {b}", [("Oak", "Walnut", "Bamboo", "Maple", "Composite"), ("Small", "Medium", "Large", "XL")], (19, 89), STANDALONE, 1.0, ("knife",)),
        _k("sharpener", "Knife Sharpener {a}", [("Whetstone 1000/6000", "Whetstone 400/1000", "Pull-Through", "Electric", "Honing Rod", "Guided System")], (15, 89), ACCESSORY, 0.4, ("knife",)),
        _k("containers", "Glass Food Containers {a} ({b})", [("Round", "Square", "Rectangular"), ("3 pack", "5 pack", "10 pack")], (19, 49), STANDALONE, 0.6, ("spatula",)),
        _k("spatula", "Silicone Spatula Set - {a}", [COLOURS], (9, 19), STANDALONE, 0.6, ("containers", "skillet")),
    )),
    _Category("Camping", ("Alpine", "Trailblaze"), (
        _k("stove", "{line} Camping Stove {a}", [("Mini", "Titan", "Duo", "Jet", "Ultralight", "Basecamp")], (39, 199), MAIN, 0.5, ("canister", "windscreen", "pot")),
        _k("canister", "{line} Gas Canister {a}", [("100 g", "230 g", "450 g", "3 pack 230 g")], (5, 24), CONSUMABLE, 0.4, ("pot",), 30),
        _k("windscreen", "{line} Stove Windscreen {a}", [("Aluminium", "Titanium")], (12, 39), ACCESSORY, 0.2, ("pot", "canister")),
        _k("pot", "{line} Cook Pot Set {a}", [("0.8 L", "1 L", "1.5 L", "2-Person", "4-Person")], (29, 89), ACCESSORY, 0.4, ("canister",)),
        _k("tent", "Tent {a}-Person {b} - {c}", [("1", "2", "3", "4", "6"), MODELS, ("Green", "Orange", "Grey", "Sand", "Blue")], (89, 699), STANDALONE, 1.8, ("sleepingbag", "mat", "headlamp")),
        _k("sleepingbag", "Sleeping Bag {a} Comfort {b}", [MODELS, ("-5 C", "0 C", "5 C", "10 C")], (49, 399), STANDALONE, 1.2, ("mat", "tent")),
        _k("headlamp", "Headlamp {a} {b} lm", [MODELS, ("200", "350", "500", "750")], (19, 89), STANDALONE, 1.0, ("poles", "tent")),
        _k("poles", "Trekking Poles {a} - {b}", [("Carbon", "Aluminium", "Folding Carbon"), COLOURS], (39, 159), STANDALONE, 0.8, ("headlamp",)),
        _k("mat", "Sleeping Mat {a} {b}", [MODELS, ("Self-Inflating", "Inflatable", "Foam")], (29, 149), STANDALONE, 1.0, ("sleepingbag",)),
    )),
    _Category("Gaming", ("NovaBox", "Playsphere", "Hyperion"), (
        _k("console", "{line} Console {a}", [("Standard Edition", "Digital Edition", "Pro 1 TB", "Pro 2 TB", "Slim", "Starter Bundle")], (299, 699), MAIN, 0.4, ("controller", "game", "dock", "headset")),
        _k("controller", "{line} Wireless Controller - {a}", [COLOURS], (49, 79), ACCESSORY, 0.8, ("game", "dock")),
        _k("game", "{line} Game: {a} {b}", [("Star", "Shadow", "Iron", "Crystal", "Neon", "Dragon", "Storm", "Frontier", "Galactic", "Mystic", "Rogue", "Turbo"), ("Racer", "Legends", "Quest", "Tactics", "Odyssey", "Arena", "Kingdom", "Rally", "Siege", "Heroes")], (19, 69), ACCESSORY, 3.0, ("game", "controller")),
        _k("dock", "{line} Charging Dock {a}", [("Dual", "Quad", "Vertical Stand")], (19, 39), ACCESSORY, 0.3, ("controller",)),
        _k("headset", "{line} Gaming Headset {a} - {b}", [("Wired", "Wireless", "Pro"), ("Black", "White", "Red")], (39, 199), ACCESSORY, 0.5, ("game",)),
        _k("mouse", "Gaming Mouse {a} {b}", [MODELS, ("Wired", "Wireless", "Ultralight")], (29, 149), STANDALONE, 1.0, ("keyboard", "chair")),
        _k("keyboard", "Mechanical Keyboard {a} - {b} Switches", [MODELS, ("Red", "Brown", "Blue", "Silent")], (59, 229), STANDALONE, 1.0, ("mouse",)),
        _k("chair", "Gaming Chair {a} - {b}", [MODELS, COLOURS], (149, 499), STANDALONE, 0.8, ("keyboard",)),
    )),
    _Category("Baby", ("Koala", "Nestling", "Wanderkid"), (
        _k("stroller", "{line} Stroller {a} - {b}", [("Compact", "All-Terrain", "Travel System", "Double"), COLOURS[:8]], (199, 999), MAIN, 0.7, ("strolleracc", "raincover")),
        _k("raincover", "{line} Stroller Rain Cover {a}", [("Single", "Double", "Travel System")], (19, 49), ACCESSORY, 0.3, ("strolleracc",)),
        _k("strolleracc", "{line} Stroller {a}", [("Cup Holder", "Organiser Bag", "Footmuff", "Sun Canopy", "Parasol", "Buggy Board", "Mosquito Net", "Seat Liner")], (14, 89), ACCESSORY, 0.8, ("strolleracc", "raincover")),
        _k("diapers", "Diapers Size {a} ({b} pack)", [("1", "2", "3", "4", "5", "6"), ("44", "64", "96", "144")], (9, 39), CONSUMABLE, 1.2, ("wipes",), 14),
        _k("wipes", "Baby Wipes {a} ({b} x 64)", [("Sensitive", "Fragrance-Free", "Water", "Aloe"), ("4", "8", "12")], (5, 19), CONSUMABLE, 0.6, ("diapers",), 21),
        _k("bottles", "Baby Bottle Set {a} {b}", [("Anti-Colic", "Glass", "Wide Neck"), ("150 ml", "260 ml", "330 ml")], (15, 39), STANDALONE, 0.7, ("monitor",)),
        _k("monitor", "Baby Monitor {a} {b}", [MODELS, ("Audio", "Video", "Wi-Fi Video")], (39, 249), STANDALONE, 1.0, ("carseat", "bottles")),
        _k("carseat", "Car Seat {a} Group {b}", [MODELS, ("0+", "1", "2/3", "0+/1")], (79, 399), STANDALONE, 1.0, ("stroller",)),
    )),
    _Category("Pets", ("AquaVista", "ReefLine"), (
        _k("dogfood", "Dog Food {a} {b} {c}", [("Adult", "Puppy", "Senior", "Grain-Free"), ("Chicken", "Lamb", "Salmon", "Beef", "Turkey"), ("2 kg", "6 kg", "12 kg")], (12, 79), CONSUMABLE, 1.5, ("leash", "dogbed"), 30),
        _k("catfood", "Cat Food {a} {b} {c}", [("Adult", "Kitten", "Indoor", "Senior"), ("Chicken", "Tuna", "Salmon", "Duck"), ("Dry 2 kg", "Wet 12 x 85 g", "Dry 4 kg")], (9, 49), CONSUMABLE, 1.5, ("litter", "scratcher"), 28),
        _k("litter", "Cat Litter {a} {b}", [("Clumping", "Silica", "Pine", "Paper"), ("5 L", "10 L", "20 L")], (7, 29), CONSUMABLE, 0.6, ("catfood",), 30),
        _k("leash", "Dog Leash {a} - {b}", [("Retractable 5 m", "Rope 1.5 m", "Leather 1.2 m", "Hands-Free"), COLOURS], (12, 45), STANDALONE, 1.0, ("dogbed", "dogfood")),
        _k("dogbed", "Dog Bed {a} {b} - {c}", [("Orthopedic", "Donut", "Cooling"), ("S", "M", "L", "XL"), ("Grey", "Beige", "Navy", "Brown")], (29, 149), STANDALONE, 1.0, ("leash",)),
        _k("scratcher", "Cat Scratching Post {a} {b}", [("60 cm", "90 cm", "150 cm Tower"), ("Beige", "Grey", "Cream")], (19, 129), STANDALONE, 0.5, ("catfood",)),
        _k("aquarium", "{line} Aquarium {a}", [("20 L", "60 L", "120 L", "200 L", "Nano 10 L")], (49, 499), MAIN, 0.4, ("aqfilter", "aqlight")),
        _k("aqfilter", "{line} Filter Cartridge {a}", [("Small", "Medium", "Large", "Carbon 3 pack")], (7, 29), CONSUMABLE, 0.3, ("aqlight",), 30),
        _k("aqlight", "{line} LED Light {a}", [("30 cm", "60 cm", "90 cm")], (29, 119), ACCESSORY, 0.3, ("aqfilter",)),
    )),
    _Category("Beauty", ("Sonara", "BrightSmile"), (
        _k("toothbrush", "{line} Electric Toothbrush {a} - {b}", [("1000", "3000", "5000", "Series 7", "Series 9"), ("White", "Black", "Pink", "Blue")], (29, 249), MAIN, 0.6, ("heads",)),
        _k("heads", "{line} Replacement Brush Heads {a} ({b} pack)", [("Precision", "Sensitive", "Whitening", "Deep Clean"), ("4", "8")], (14, 39), CONSUMABLE, 0.5, ("heads",), 75),
        _k("dryer", "Hair Dryer {a} {b} W", [MODELS, ("1800", "2000", "2200", "2400")], (29, 299), STANDALONE, 1.0, ("shampoo",)),
        _k("shampoo", "Shampoo {a} {b}", [("Repair", "Volume", "Anti-Dandruff", "Curl", "Colour Protect", "Daily"), ("250 ml", "500 ml", "1 L")], (4, 19), CONSUMABLE, 1.0, ("dryer", "moisturiser"), 40),
        _k("moisturiser", "Face Moisturiser {a} {b}", [("Hydrating", "SPF 30", "Night", "Oil-Free", "Sensitive", "Anti-Ageing"), ("50 ml", "75 ml")], (9, 49), CONSUMABLE, 0.8, ("serum",), 45),
        _k("serum", "Face Serum {a} {b}", [("Vitamin C", "Hyaluronic Acid", "Retinol", "Niacinamide", "Peptide"), ("15 ml", "30 ml")], (14, 59), STANDALONE, 0.7, ("moisturiser",)),
        _k("perfume", "Eau de Parfum {a} {b}", [MODELS, ("50 ml", "100 ml")], (39, 149), STANDALONE, 1.2, ("perfume", "serum")),
    )),
    _Category("Home Office", ("Inkwell", "PrintPro"), (
        _k("desk", "Standing Desk {a} {b} - {c}", [MODELS, ("120 x 60 cm", "140 x 70 cm", "160 x 80 cm"), ("Oak", "Walnut", "White", "Black")], (249, 899), STANDALONE, 1.0, ("chair", "lamp", "monitor")),
        _k("chair", "Ergonomic Office Chair {a} - {b}", [MODELS, ("Black", "Grey", "Blue", "White")], (149, 799), STANDALONE, 1.0, ("desk",)),
        _k("monitor", "Monitor {c} {a} {b}", [("24 in", "27 in", "32 in", "34 in Ultrawide"), ("FHD", "QHD", "4K", "QHD 144 Hz"), MODELS], (149, 799), STANDALONE, 1.2, ("dock", "webcam")),
        _k("printer", "{line} Printer {a}", [("Inkjet All-in-One", "Laser Mono", "Laser Colour", "Photo", "Compact")], (79, 399), MAIN, 0.5, ("ink", "paper")),
        _k("ink", "{line} Ink Cartridge {a}", [("Black", "Cyan", "Magenta", "Yellow", "Multipack", "Black XL", "Toner")], (14, 69), CONSUMABLE, 0.6, ("ink", "paper"), 45),
        _k("paper", "Printer Paper A4 {a} ({b} sheets)", [("80 gsm", "100 gsm", "Recycled 80 gsm", "Photo Glossy"), ("500", "2500")], (5, 39), CONSUMABLE, 0.4, ("ink",), 60),
        _k("webcam", "Webcam {a} {b}", [MODELS, ("1080p", "1440p", "4K")], (39, 199), STANDALONE, 0.8, ("lamp",)),
        _k("lamp", "Desk Lamp {a} - {b}", [("LED Arm", "Clamp", "Architect", "Smart"), COLOURS], (19, 99), STANDALONE, 0.8, ("desk",)),
        _k("dock", "USB-C Docking Station {a} {b}-in-1", [MODELS, ("7", "9", "11", "13")], (49, 249), STANDALONE, 0.8, ("monitor",)),
    )),
    _Category("Photography", ("Z-mount", "X-mount", "R-mount", "E-mount"), (
        _k("body", "Mirrorless Camera {a} {b} Body ({line})", [("Alpha", "Lumen", "Optix", "Vista", "Prism", "Sigma"), ("I", "II", "III", "IV")], (499, 2999), MAIN, 0.6, ("lens", "battery", "sd", "bag")),
        _k("lens", "Lens {a} for {line}", [("50mm f/1.8", "35mm f/1.4", "24-70mm f/2.8", "70-200mm f/4", "85mm f/1.8", "16-35mm f/4", "100mm f/2.8 Macro", "18-55mm f/3.5-5.6", "28mm f/2.8 Pancake", "150-600mm f/5-6.3", "24mm f/1.8", "135mm f/2")], (149, 1999), ACCESSORY, 1.2, ("lens", "filter", "bag")),
        _k("battery", "Camera Battery {a} for {line}", [("Standard", "High Capacity", "Twin Pack", "Battery Grip", "USB-C Charger")], (29, 249), ACCESSORY, 0.4, ("sd",)),
        _k("sd", "SD Card {a} {b}", [("64 GB", "128 GB", "256 GB", "512 GB"), ("UHS-I V30", "UHS-II V60", "UHS-II V90")], (15, 199), ACCESSORY, 0.5, ("bag", "battery")),
        _k("bag", "Camera Bag {a} - {b}", [("Sling", "Backpack 20 L", "Backpack 30 L", "Shoulder", "Roller"), ("Black", "Grey", "Olive", "Navy")], (39, 249), STANDALONE, 0.8, ("tripod",)),
        _k("tripod", "Tripod {a} {b}", [MODELS, ("Travel Carbon", "Aluminium", "Video Fluid Head")], (49, 399), STANDALONE, 0.8, ("bag", "filter")),
        _k("filter", "Lens Filter {a} {b}", [("UV", "Circular Polariser", "ND8", "ND64", "Variable ND"), ("52 mm", "58 mm", "67 mm", "72 mm", "77 mm", "82 mm")], (15, 129), STANDALONE, 0.7, ("tripod",)),
    )),
    _Category("Cycling", ("Velo", "Cadence"), (
        _k("computer", "{line} GPS Bike Computer {a}", [("Mini", "Plus", "Pro", "Touch", "Edge")], (99, 499), MAIN, 0.5, ("mount", "sensor")),
        _k("mount", "{line} Out-Front Mount {a}", [("Aluminium", "Carbon", "Aero")], (19, 59), ACCESSORY, 0.3, ("sensor",)),
        _k("sensor", "{line} {a} Sensor", [("Speed", "Cadence", "Speed & Cadence", "Heart Rate")], (29, 69), ACCESSORY, 0.4, ("mount", "sensor")),
        _k("helmet", "Bike Helmet {a} {b} - {c}", [MODELS, ("Road", "MTB", "Urban"), COLOURS[:8]], (39, 249), STANDALONE, 1.2, ("lights", "jersey")),
        _k("tube", "Inner Tube {a} {b}", [("700x25c", "700x28c", "700x32c", "29x2.3", "27.5x2.4"), ("Presta", "Schrader")], (6, 15), CONSUMABLE, 0.5, ("lube",), 60),
        _k("lube", "Chain Lube {a} {b}", [("Wet", "Dry", "Wax", "Ceramic"), ("100 ml", "250 ml")], (7, 19), CONSUMABLE, 0.4, ("tube",), 60),
        _k("lights", "Bike Light Set {a} {b} lm", [MODELS, ("400", "800", "1200")], (19, 119), STANDALONE, 0.8, ("helmet",)),
        _k("jersey", "Cycling Jersey {a} - {b}", [MODELS, COLOURS], (39, 129), STANDALONE, 1.0, ("helmet",)),
        _k("bike", "Road Bike {a} {b}", [MODELS, ("Aluminium 2x11", "Carbon 2x12", "Gravel 1x11", "Endurance 2x11")], (799, 4999), STANDALONE, 0.6, ("helmet", "lights", "computer")),
    )),
    _Category("Fitness", (), (
        _k("dumbbells", "Adjustable Dumbbells {b} {a}", [("10 kg", "20 kg", "24 kg", "32 kg", "40 kg"), MODELS], (49, 399), STANDALONE, 1.0, ("bench", "mat")),
        _k("mat", "Yoga Mat {a} - {b}", [("4 mm", "6 mm", "8 mm", "Cork", "Travel"), COLOURS], (19, 89), STANDALONE, 1.2, ("bands", "bottle")),
        _k("bands", "Resistance Bands {a} - {b}", [("Loop Set", "Tube Set", "Mini Bands", "Pull-Up Band"), ("Light", "Medium", "Heavy", "Mixed")], (9, 39), STANDALONE, 0.7, ("mat",)),
        _k("protein", "Whey Protein {a} {b}", [("Chocolate", "Vanilla", "Strawberry", "Cookies", "Banana", "Unflavoured", "Salted Caramel", "Coffee"), ("1 kg", "2.5 kg")], (19, 69), CONSUMABLE, 0.8, ("bottle",), 30),
        _k("scale", "Smart Scale {a} - {b}", [MODELS, ("Black", "White")], (29, 129), STANDALONE, 0.5, ("protein",)),
        _k("kettlebell", "Kettlebell {a} {b}", [("8 kg", "12 kg", "16 kg", "20 kg", "24 kg", "32 kg"), ("Cast Iron", "Competition", "Vinyl")], (19, 99), STANDALONE, 0.8, ("mat",)),
        _k("bench", "Weight Bench {a} {b}", [MODELS, ("Flat", "Adjustable", "Foldable")], (79, 299), STANDALONE, 0.6, ("dumbbells",)),
        _k("bottle", "Shaker Bottle {a} - {b}", [("500 ml", "700 ml"), COLOURS], (5, 15), STANDALONE, 0.5, ("protein",)),
    )),
    _Category("Audio", ("Sonic", "Auralis"), (
        _k("earbuds", "{line} True Wireless Earbuds {a} - {b}", [("Sport", "ANC", "Lite", "Pro", "Studio"), ("Black", "White", "Blue", "Sand")], (49, 299), MAIN, 0.6, ("tips", "case")),
        _k("tips", "{line} Ear Tips {a}", [("Silicone S/M/L", "Foam M", "Foam L", "Sport Fins")], (9, 25), ACCESSORY, 0.3, ("case",)),
        _k("case", "{line} Charging Case Cover - {a}", [COLOURS], (9, 25), ACCESSORY, 0.4, ("tips",)),
        _k("headphones", "Over-Ear Headphones {a} {b} - {c}", [MODELS, ("Wired", "Wireless", "ANC"), ("Black", "Silver", "Navy", "White")], (49, 449), STANDALONE, 1.2, ("speaker",)),
        _k("speaker", "Bluetooth Speaker {a} {b}", [MODELS, ("Mini", "Waterproof", "Party", "Home")], (29, 349), STANDALONE, 1.0, ("headphones",)),
        _k("turntable", "Turntable {a} {b}", [MODELS, ("Belt Drive", "Direct Drive", "Bluetooth")], (129, 699), STANDALONE, 0.6, ("vinyl", "speaker")),
        _k("vinyl", "Vinyl Record: {a} {b}", [("Midnight", "Golden", "Electric", "Velvet", "Silent", "Northern", "Neon", "Wild", "Paper", "Crystal", "Ocean", "Summer"), ("Hearts", "Avenue", "Echoes", "Skyline", "Tides", "Machines", "Dreams", "Rivers", "Lights", "Signals")], (19, 39), STANDALONE, 2.0, ("vinyl", "turntable")),
    )),
    _Category("Smart Home", ("Echoa", "Homie", "Lumo"), (
        _k("hub", "{line} Smart Speaker {a} - {b}", [("Mini", "Standard", "Display 8 in", "Display 10 in"), ("Charcoal", "Chalk", "Sky")], (29, 249), MAIN, 0.6, ("plug", "bulb", "sensor")),
        _k("plug", "{line} Smart Plug {a}", [("Single", "2 pack", "4 pack", "Outdoor", "Energy Monitor")], (12, 59), ACCESSORY, 0.4, ("bulb", "sensor")),
        _k("bulb", "{line} Smart Bulb {a} {b}", [("E27", "E14", "GU10"), ("White", "Colour", "Filament")], (9, 49), ACCESSORY, 0.6, ("bulb", "plug")),
        _k("sensor", "{line} {a} Sensor", [("Motion", "Door", "Temperature", "Water Leak", "Smoke")], (15, 59), ACCESSORY, 0.4, ("sensor", "plug")),
        _k("vacuum", "Robot Vacuum {a} {b}", [MODELS, ("Lidar", "Mop Combo", "Self-Empty", "Compact")], (149, 899), STANDALONE, 1.0, ("vacfilter",)),
        _k("vacfilter", "Robot Vacuum Filter & Brush Kit {a} ({b} pack)", [MODELS, ("3", "6")], (9, 29), CONSUMABLE, 0.6, ("vacuum",), 60),
        _k("camera", "Security Camera {a} {b}", [MODELS, ("Indoor", "Outdoor", "Doorbell", "Floodlight")], (39, 249), STANDALONE, 1.0, ("camera",)),
    )),
    _Category("Garden", ("GreenCut", "Verdi"), (
        _k("mower", "{line} Cordless Lawn Mower {a}", [("33 cm", "37 cm", "42 cm", "46 cm Self-Propelled", "Robot")], (149, 1299), MAIN, 0.5, ("battery", "blade", "trimmer")),
        _k("battery", "{line} Battery {a}", [("2 Ah", "4 Ah", "5 Ah", "Twin Pack 4 Ah", "Fast Charger")], (39, 179), ACCESSORY, 0.4, ("blade", "trimmer")),
        _k("blade", "{line} Replacement Blade {a}", [("33 cm", "37 cm", "42 cm", "46 cm")], (14, 39), CONSUMABLE, 0.3, ("battery",), 120),
        _k("trimmer", "{line} Grass Trimmer {a}", [("Standard", "Long Reach", "Edger")], (59, 199), ACCESSORY, 0.3, ("battery",)),
        _k("hose", "Garden Hose {a} - {b}", [("15 m", "25 m", "30 m Expandable", "50 m"), ("Green", "Grey", "Blue")], (19, 79), STANDALONE, 0.8, ("shears",)),
        _k("seeds", "Seeds {a} {b}", [("Tomato", "Basil", "Sunflower", "Lettuce", "Chili", "Carrot", "Wildflower Mix", "Lavender", "Courgette", "Pea", "Radish", "Parsley"), ("Heirloom", "Organic", "F1 Hybrid")], (2, 9), CONSUMABLE, 1.5, ("seeds", "fertiliser"), 45),
        _k("fertiliser", "Fertiliser {a} {b}", [("All-Purpose", "Tomato", "Lawn", "Rose", "Citrus", "Orchid"), ("1 L", "2.5 kg", "5 kg")], (6, 29), CONSUMABLE, 0.8, ("seeds",), 45),
        _k("shears", "Pruning Shears {a} {b}", [MODELS, ("Bypass", "Anvil", "Ratchet")], (14, 59), STANDALONE, 0.8, ("hose",)),
    )),
    _Category("Books", (), (
        _k("novel", "{a} {b} ({c})", [("The Silent", "The Last", "A Distant", "The Hidden", "The Burning", "The Glass", "The Winter", "A Quiet", "The Lost", "The Seventh", "The Iron", "A Little"), ("Garden", "Harbour", "Letter", "Kingdom", "River", "Orchard", "Promise", "Lighthouse", "Archive", "Station", "Daughter", "Forest", "Island", "Mountain"), ("Paperback", "Hardcover")], (8, 24), STANDALONE, 4.0, ("novel",)),
        _k("cookbook", "Cookbook: {a} {b}", [("Simple", "Weeknight", "Plant-Based", "Italian", "Japanese", "Mediterranean", "Baking", "One-Pot", "Fermentation", "Street Food"), ("Classics", "Kitchen", "Essentials", "Feasts", "Basics")], (15, 39), STANDALONE, 1.0, ("cookbook", "novel")),
        _k("guide", "{a} Guide: {b}", [("Field", "Pocket", "Complete", "Beginner's", "Essential"), ("Birds of Europe", "Coffee Brewing", "Trail Running", "Home Baking", "Houseplants", "Photography", "Bike Maintenance", "Dog Training", "Mindfulness", "Camping", "Woodworking", "Budget Travel")], (12, 35), STANDALONE, 1.0, ("guide",)),
        _k("kids", "Picture Book: The {a} {b}", [("Little", "Sleepy", "Brave", "Happy", "Tiny", "Curious"), ("Bear", "Fox", "Owl", "Dragon", "Penguin", "Rabbit", "Tiger", "Whale")], (6, 15), STANDALONE, 0.8, ("kids",)),
    )),
    _Category("Travel", (), (
        _k("suitcase", "Suitcase {a} {b} - {c}", [MODELS, ("Cabin 55 cm", "Medium 68 cm", "Large 78 cm"), COLOURS], (69, 399), STANDALONE, 1.5, ("cubes", "tag", "adapter")),
        _k("adapter", "Universal Travel Adapter {a}", [("USB-C 65 W", "4 USB", "Compact", "World 150 Countries", "Dual USB-C")], (14, 49), STANDALONE, 0.3, ("pillow",)),
        _k("pillow", "Neck Pillow {a} - {b}", [("Memory Foam", "Inflatable", "Hooded"), COLOURS], (12, 39), STANDALONE, 0.7, ("adapter", "cubes")),
        _k("cubes", "Packing Cubes {a} Set - {b}", [("3-Piece", "6-Piece", "Compression 4-Piece"), COLOURS], (15, 45), STANDALONE, 0.8, ("tag", "pillow")),
        _k("backpack", "Travel Backpack {a} {b} - {c}", [MODELS, ("30 L", "40 L", "45 L"), ("Black", "Grey", "Olive", "Navy", "Sand")], (59, 249), STANDALONE, 1.2, ("cubes",)),
        _k("tag", "Luggage Tag Set - {a}", [COLOURS], (5, 15), STANDALONE, 0.4, ("adapter",)),
    )),
    _Category("Toys", (), (
        _k("building", "{a} Building Set - {b}", [("City", "Space", "Castle", "Pirates", "Jungle", "Arctic", "Robots", "Dinosaurs", "Farm", "Racing"), ("Starter", "Station", "Expedition", "Headquarters", "Deluxe")], (14, 149), STANDALONE, 1.5, ("building",)),
        _k("puzzle", "Jigsaw Puzzle {a} Pieces - {b}", [("500", "1000", "1500", "2000"), ("Mountain Lake", "City Lights", "Cats", "Vintage Map", "Flowers", "Ocean", "Space", "Autumn Forest")], (12, 39), STANDALONE, 1.0, ("puzzle", "boardgame")),
        _k("boardgame", "Board Game: {a} {b}", [("Castle", "Harbor", "Railroad", "Star", "Jungle", "Merchant", "Dragon", "Island"), ("Builders", "Traders", "Explorers", "Quest", "Empire", "Race")], (19, 69), STANDALONE, 1.0, ("boardgame", "puzzle")),
        _k("plush", "Plush {a} {b}", [("Bear", "Fox", "Owl", "Dragon", "Penguin", "Rabbit", "Unicorn", "Dinosaur"), ("20 cm", "35 cm", "60 cm")], (9, 49), STANDALONE, 0.8, ("plush",)),
        _k("rc", "RC Car {a} - {b}", [MODELS, ("Red", "Blue", "Green", "Yellow", "Black")], (29, 149), STANDALONE, 0.7, ("building",)),
    )),
    _Category("Outdoor Clothing", (), (
        _k("rainjacket", "Rain Jacket {a} - {b}", [MODELS, COLOURS], (79, 349), STANDALONE, 1.2, ("fleece", "boots")),
        _k("fleece", "Fleece Jacket {a} - {b}", [MODELS, COLOURS], (39, 149), STANDALONE, 1.0, ("baselayer", "beanie")),
        _k("boots", "Hiking Boots {a} {b} - {c}", [MODELS, ("Mid Waterproof", "Low", "Leather"), ("Brown", "Grey", "Black", "Olive")], (89, 249), STANDALONE, 1.2, ("socks", "rainjacket")),
        _k("baselayer", "Merino Base Layer {a} - {b}", [("Long Sleeve", "Short Sleeve", "Leggings"), COLOURS[:8]], (39, 99), STANDALONE, 0.7, ("fleece",)),
        _k("gloves", "Hiking Gloves {a} - {b}", [MODELS, ("Black", "Grey", "Olive")], (15, 59), STANDALONE, 0.5, ("beanie",)),
        _k("beanie", "Beanie {a} - {b}", [("Merino", "Wool", "Fleece-Lined"), COLOURS], (12, 35), STANDALONE, 0.5, ("gloves",)),
        _k("socks", "Hiking Socks {a} (2 pack) - {b}", [("Merino", "Midweight", "Liner"), COLOURS[:8]], (15, 29), STANDALONE, 0.5, ("boots",)),
    )),
    _Category("Home", (), (
        _k("bedding", "Duvet Cover Set {a} {b} - {c}", [("Cotton", "Linen", "Percale", "Sateen"), ("Single", "Double", "King"), COLOURS[:10]], (29, 159), STANDALONE, 1.5, ("towels",)),
        _k("towels", "Bath Towel Set {a} - {b}", [("2-Piece", "4-Piece", "6-Piece"), COLOURS], (19, 79), STANDALONE, 1.0, ("bedding", "candle")),
        _k("candle", "Scented Candle {a} {b}", [("Fig", "Cedar", "Lavender", "Vanilla", "Sea Salt", "Amber", "Jasmine", "Eucalyptus", "Orange Blossom", "Tobacco Leaf"), ("200 g", "400 g")], (12, 45), CONSUMABLE, 0.8, ("candle",), 40),
        _k("vacuum", "Cordless Vacuum {a} {b}", [MODELS, ("Stick", "Handheld", "Pet")], (99, 599), STANDALONE, 0.8, ("detergent",)),
        _k("pot", "Plant Pot {a} {b} - {c}", [("Ceramic", "Terracotta", "Concrete"), ("12 cm", "17 cm", "24 cm"), ("White", "Black", "Sage", "Terracotta", "Blue")], (9, 59), STANDALONE, 0.8, ("pot",)),
        _k("detergent", "Laundry Detergent {a} {b}", [("Bio", "Non-Bio", "Sensitive", "Colour"), ("40 washes", "80 washes")], (7, 24), CONSUMABLE, 0.5, ("towels",), 35),
    )),
    _Category("Pantry", (), (
        _k("tea", "Tea {a} {b}", [("Earl Grey", "Green Sencha", "Chamomile", "Rooibos", "English Breakfast", "Jasmine", "Peppermint", "Oolong", "Chai", "Matcha"), ("50 bags", "100 g Loose", "250 g Loose")], (4, 19), CONSUMABLE, 1.2, ("honey",), 30),
        _k("oil", "Olive Oil Extra Virgin {a} {b}", [("Greek", "Spanish", "Italian", "Portuguese", "Organic"), ("500 ml", "1 L", "3 L")], (7, 39), CONSUMABLE, 0.6, ("pasta", "spices"), 40),
        _k("pasta", "Pasta {a} {b}", [("Spaghetti", "Penne", "Rigatoni", "Fusilli", "Linguine", "Orecchiette"), ("500 g", "1 kg", "6 x 500 g")], (2, 15), CONSUMABLE, 0.8, ("oil",), 21),
        _k("chocolate", "Dark Chocolate {a} {b}", [("70%", "85%", "Sea Salt", "Orange", "Almond", "Mint", "Chili", "Raspberry"), ("100 g", "5 x 100 g")], (2, 19), STANDALONE, 0.8, ("chocolate", "tea")),
        _k("spices", "Spice {a} {b}", [("Smoked Paprika", "Cumin", "Turmeric", "Cinnamon", "Garam Masala", "Oregano", "Black Pepper", "Chili Flakes", "Za'atar", "Sumac", "Cardamom", "Nutmeg"), ("50 g", "200 g")], (2, 12), STANDALONE, 1.0, ("spices", "oil")),
        _k("honey", "Honey {a} {b}", [("Acacia", "Manuka", "Wildflower", "Lavender", "Heather", "Orange Blossom"), ("250 g", "500 g", "1 kg")], (5, 49), STANDALONE, 0.6, ("tea",)),
    )),
)  # fmt: skip

# Persona archetypes: (share of shoppers, {category: weight}). Mixing 2-3 categories is
# what gives collaborative signal across categories (runners also buy gels and earbuds).
PERSONAS: tuple[tuple[float, dict[str, float]], ...] = (
    (1.0, {"Running": 0.55, "Fitness": 0.25, "Audio": 0.2}),
    (1.0, {"Coffee": 0.6, "Kitchen": 0.25, "Books": 0.15}),
    (0.8, {"Kitchen": 0.5, "Coffee": 0.2, "Pantry": 0.3}),
    (0.9, {"Camping": 0.45, "Outdoor Clothing": 0.35, "Cycling": 0.2}),
    (1.0, {"Gaming": 0.65, "Home Office": 0.2, "Audio": 0.15}),
    (0.9, {"Baby": 0.6, "Home": 0.25, "Toys": 0.15}),
    (0.9, {"Pets": 0.65, "Garden": 0.2, "Home": 0.15}),
    (0.7, {"Photography": 0.6, "Travel": 0.25, "Home Office": 0.15}),
    (0.7, {"Cycling": 0.55, "Fitness": 0.25, "Outdoor Clothing": 0.2}),
    (0.8, {"Home Office": 0.5, "Coffee": 0.3, "Smart Home": 0.2}),
    (0.8, {"Beauty": 0.6, "Fitness": 0.2, "Home": 0.2}),
    (0.6, {"Garden": 0.55, "Home": 0.25, "Books": 0.2}),
    (0.6, {"Travel": 0.5, "Photography": 0.25, "Audio": 0.25}),
    (0.6, {"Smart Home": 0.5, "Audio": 0.25, "Gaming": 0.25}),
    (0.5, {"Books": 0.6, "Pantry": 0.25, "Toys": 0.15}),
)
# Shoppers come back most in the evening, least at night (hour-of-day weights, UTC).
HOURLY = (1, 0.6, 0.4, 0.3, 0.3, 0.5, 1, 2, 3, 3.5, 3.5, 4, 5, 4.5, 4, 4, 4.5, 5, 6, 7, 7.5, 6.5, 4, 2)  # fmt: skip
# Large scales outgrow the template combinations (~13k products); further products are
# editions of existing ones, which keeps titles unique up to ~75k products.
EDITIONS = ("", " (2025 Edition)", " (Limited Edition)", " (Refurbished)", " (Bundle)", " (Eco)")
N_SUCCESSORS = 4
# How likely each item-to-item successor is, strongest first: a few strong, specific
# transitions are what a sequence model learns and a popularity ranking cannot.
SUCCESSOR_P = (0.4, 0.27, 0.19, 0.14)


# --------------------------------------------------------------------------- catalog build


@dataclass(frozen=True, eq=False)
class _Catalog:
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


def _build_catalog(config: DemoConfig, rng: np.random.Generator) -> _Catalog:
    kinds = [(c, kind) for c, cat in enumerate(CATEGORIES) for kind in cat.kinds]
    caps = np.array(
        [
            math.prod(len(a) for a in kind.axes) * (len(CATEGORIES[c].lines) if kind.lined else 1)
            for c, kind in kinds
        ],
        dtype=np.int64,
    )
    # Each category gets about the same share of products; within it, by type weight.
    cat_weight_sum = np.zeros(len(CATEGORIES))
    for c, kind in kinds:
        cat_weight_sum[c] += kind.weight
    targets = np.array([kind.weight / cat_weight_sum[c] for c, kind in kinds])
    counts = _allocate(targets, caps, config.item_target)
    if counts.sum() < config.item_target:
        counts += _allocate(
            targets, caps * len(EDITIONS) - counts, config.item_target - int(counts.sum())
        )

    line_ids: dict[tuple[int, str], int] = {}
    for c, cat in enumerate(CATEGORIES):
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
        line_names = CATEGORIES[c].lines if kind.lined else ("",)
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
    for c in range(len(CATEGORIES)):
        members = np.flatnonzero(category == c)
        ranks = rng.permutation(len(members))
        popularity[members] = 1.0 / (ranks + 1.0) ** config.popularity_exponent

    successors, successor_cum = _successor_graph(rng, kinds, category, kind_arr, line, popularity)

    # Shoppers rarely land on a platform-bound accessory without owning the platform.
    entry = popularity * np.where(line >= 0, np.where(np.array(role) == MAIN, 1.0, 0.3), 1.0)
    category_items, category_cum = [], []
    for c in range(len(CATEGORIES)):
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
            "item_id": pd.array(_ids("P", n_items), dtype="str"),
            "title": pd.array(titles, dtype="str"),
            "category": pd.array([CATEGORIES[c].name for c in cats], dtype="str"),
            "price": np.round(np.array(prices, dtype=np.float64), 2),
        }
    )
    return _Catalog(
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
    kinds: list[tuple[int, _Kind]],
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


def _ids(prefix: str, n: int) -> np.ndarray:
    width = max(5, len(str(n - 1)))
    return np.array([f"{prefix}{i:0{width}d}" for i in range(n)], dtype=object)


# --------------------------------------------------------------------------- shoppers


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

    def __init__(self, sim: _Simulation, user: int, cat_items: list[int], cat_cum: list[float]):
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
            return int(u() * len(CATEGORIES))
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


class _Simulation:
    def __init__(self, config: DemoConfig, catalog: _Catalog, rng: np.random.Generator):
        self.config = config
        self.catalog = catalog
        self.u = _uniforms(rng)
        self.start = float(config.start_timestamp)
        self.end = float(config.end_timestamp)
        self.hour_cum = list(accumulate(HOURLY))
        self.persona_cum = list(accumulate(share for share, _ in PERSONAS))
        names = [c.name for c in CATEGORIES]
        self.persona_categories = [[names.index(n) for n in mix] for _, mix in PERSONAS]
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
        weights = [w * (0.5 + self.u()) for w in PERSONAS[p][1].values()]
        return self.persona_categories[p], list(accumulate(weights))

    def run(self) -> None:
        for user in range(self.config.user_count):
            items, cum = self.persona()
            _Shopper(self, user, items, cum).run()


def generate_demo(config: DemoConfig = DemoConfig()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The demo shop's (interactions, catalog); a pure function of ``config``.

    interactions: user_id (str), item_id (str), timestamp (int64 unix seconds, increasing
    within each user), event ("view" / "cart" / "purchase"), sorted by time.
    catalog: item_id, title, category, price (float64, 2 decimals).
    """
    catalog_seq, user_seq = np.random.SeedSequence(config.seed).spawn(2)
    catalog = _build_catalog(config, np.random.Generator(np.random.PCG64(catalog_seq)))
    sim = _Simulation(config, catalog, np.random.Generator(np.random.PCG64(user_seq)))
    sim.run()

    users = np.frombuffer(sim.out_user, dtype=np.int64)
    items = np.frombuffer(sim.out_item, dtype=np.int64)
    times = np.floor(np.frombuffer(sim.out_time, dtype=np.float64)).astype(np.int64)
    events = np.frombuffer(sim.out_event, dtype=np.int8)
    inside = times < config.end_timestamp
    users, items, times, events = users[inside], items[inside], times[inside], events[inside]
    # A real log is ordered by time; ties (same second) keep the shopper's own order.
    order = np.lexsort((np.arange(len(times)), users, times))
    user_names = _ids("U", config.user_count)
    interactions = pd.DataFrame(
        {
            "user_id": pd.array(user_names[users[order]], dtype="str"),
            "item_id": pd.array(catalog.frame["item_id"].to_numpy()[items[order]], dtype="str"),
            "timestamp": times[order],
            "event": pd.array(np.array(EVENT_TYPES, dtype=object)[events[order]], dtype="str"),
        }
    )
    return interactions, catalog.frame
