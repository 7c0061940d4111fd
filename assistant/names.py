"""What people call things: devices (name, aliases, node id with hyphens read as spaces),
groups and scenes, resolved from a phrase the way an operator says it.

`NameIndex` holds every name of the registry, normalised (lower case, punctuation and
"the" dropped, hyphens and underscores as spaces), kept in memory per process and reloaded
when the registry's names change (`fingerprint`: device count, highest id and last rename,
`named_at`; groups and scenes by their `updated_at`), so a request does not read 10,000 devices.

`resolve(phrase)` answers, in this order:
1. exact: the phrase is a name (or alias) of one thing, or of several (ambiguous);
2. near: a name within a small edit distance (1 for names up to 8 characters, 2 beyond),
   found through an index of each name's one-character deletions (SymSpell's trick: a
   typo, an extra or a missing letter, a transposition share a deletion with the name),
   then confirmed by Damerau-Levenshtein;
3. partial: names that contain every word of the phrase ("the light" → the kitchen, hall
   and desk lights).
Several candidates → `Resolution.choices`, never a guess.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field

from django.db.models import Count, Max

from automation.models import Scene
from devices.models import Capability, Device, Group

_DROP = re.compile(r"[^\w\s%.-]")
_SPACES = re.compile(r"[\s_\-]+")
STOP = frozenset({"the", "a", "an", "my", "our", "all", "please"})
# Words people use for common capabilities, beside each capability's own name and aliases.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "temperature": ("temp", "temperature reading"),
    "setpoint": ("target", "target temperature", "set point", "heating", "thermostat setting"),
    "level": ("brightness", "dim level", "dimmer"),
    "on": ("power", "state"),
    "speed": ("rpm", "motor speed"),
    "power": ("consumption", "power draw", "watts"),
    "energy": ("energy use", "meter reading"),
    "mode": ("heating mode",),
    "open": ("door",),
}


def normalise(text: str) -> str:
    words = _SPACES.sub(" ", _DROP.sub(" ", text.lower())).strip().split()
    return " ".join(w for w in words if w not in STOP)


@dataclass(frozen=True)
class Thing:
    kind: str  # device | group | scene
    key: str  # node_id, group name, scene name
    label: str  # what to show

    def as_choice(self) -> dict[str, str]:
        if self.kind == "device":
            return {"kind": "device", "node_id": self.key, "name": self.label}
        return {"kind": self.kind, "name": self.key}


@dataclass
class Resolution:
    found: Thing | None = None
    choices: list[Thing] = field(default_factory=list)
    how: str = ""  # exact | near | partial

    @property
    def ambiguous(self) -> bool:
        return self.found is None and len(self.choices) > 1


def distance(a: str, b: str, bound: int) -> int:
    """Damerau-Levenshtein (optimal string alignment), stopping past `bound`."""
    if abs(len(a) - len(b)) > bound:
        return bound + 1
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        current = [i] + [0] * len(b)
        best = current[0]
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                current[j] = min(current[j], previous2[j - 2] + 1)
            best = min(best, current[j])
        if best > bound:
            return bound + 1
        previous2, previous = previous, current
    return previous[-1]


def allowed_typos(name: str) -> int:
    return 1 if len(name) <= 8 else 2


def _deletions(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))} | {word}


class NameIndex:
    # The fingerprint (four aggregate queries, about 2 ms with 10,000 devices) is looked at
    # at most this often: a rename through another process is matched within a second; one
    # through this process (API, admin) at once (`devices.events.on_renamed` and a group's
    # save or delete → invalidate).
    # The names themselves are read again only when the fingerprint changed.
    REFRESH_S = 1.0

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.fingerprint: tuple[object, ...] | None = None
        self.checked_at = -1e9
        self.exact: dict[str, list[Thing]] = {}
        self.near: dict[str, set[str]] = {}  # deletion -> names
        self.words: dict[str, set[str]] = {}  # word -> names containing it
        self.labels: dict[str, Thing] = {}  # every name as written (lower case) -> its thing (for pseudonyms)
        self.vocabulary: dict[str, set[str]] = {}  # spoken word -> the capability names it may mean
        self.version = 0  # bumped at each reload

    def _fingerprint(self) -> tuple[object, ...]:
        devices = Device.objects.aggregate(n=Count("id"), top=Max("id"), named=Max("named_at"))
        groups = Group.objects.aggregate(n=Count("id"), top=Max("id"), changed=Max("updated_at"))
        scenes = Scene.objects.aggregate(n=Count("id"), top=Max("id"), changed=Max("updated_at"))
        capabilities = Capability.objects.aggregate(n=Count("id"), top=Max("id"))
        return (*devices.values(), *groups.values(), *scenes.values(), *capabilities.values())

    def _load(self) -> None:
        exact: dict[str, list[Thing]] = {}
        labels: dict[str, Thing] = {}

        def add(name: str, thing: Thing) -> None:
            key = normalise(name)
            if key and thing not in exact.setdefault(key, []):
                exact[key].append(thing)
            for written in {name.lower().strip(), name.lower().replace("-", " ").replace("_", " ").strip()}:
                if len(written) >= 3:
                    labels.setdefault(written, thing)

        for node_id, name, aliases in Device.objects.values_list("node_id", "name", "aliases"):
            thing = Thing("device", node_id, name or node_id)
            add(node_id, thing)
            for label in [name, *(aliases or [])]:
                if isinstance(label, str) and label:
                    add(label, thing)
        for name in Group.objects.values_list("name", flat=True):
            add(name, Thing("group", name, name))
        for name in Scene.objects.values_list("name", flat=True):
            add(name, Thing("scene", name, name))
        near: dict[str, set[str]] = {}
        words: dict[str, set[str]] = {}
        for key in exact:
            for deletion in _deletions(key):
                near.setdefault(deletion, set()).add(key)
            for word in key.split():
                words.setdefault(word, set()).add(key)
        vocabulary: dict[str, set[str]] = {}
        spoken: list[tuple[str, list[str]]] = [(name, []) for name in Capability.objects.values_list("name", flat=True).distinct()]
        spoken += list(Capability.objects.exclude(aliases=[]).values_list("name", "aliases"))
        for name, aliases in spoken:
            for word in (name, name.replace("_", " "), *SYNONYMS.get(name, ()), *(aliases or [])):
                if isinstance(word, str) and word.strip():
                    vocabulary.setdefault(normalise(word) or word.lower(), set()).add(name)
        self.exact, self.near, self.words, self.labels, self.vocabulary = exact, near, words, labels, vocabulary
        self.version += 1

    def refresh(self) -> None:
        with self.lock:
            now = time.monotonic()
            if now - self.checked_at < self.REFRESH_S and self.fingerprint is not None:
                return
            fingerprint = self._fingerprint()
            if fingerprint != self.fingerprint:
                self._load()
                self.fingerprint = fingerprint
            self.checked_at = now

    def invalidate(self) -> None:
        with self.lock:
            self.fingerprint = None

    def resolve(self, phrase: str, kinds: tuple[str, ...] = ("device", "group", "scene")) -> Resolution:
        self.refresh()
        key = normalise(phrase)
        if not key:
            return Resolution()

        def pick(things: list[Thing], how: str) -> Resolution:
            things = list(dict.fromkeys(t for t in things if t.kind in kinds))  # a name and a node id of one device: once
            # A group and a device of the same name: the device is meant (it is named on its own).
            if len({t.kind for t in things}) > 1 and len([t for t in things if t.kind == "device"]) == 1:
                things = [t for t in things if t.kind == "device"]
            if len(things) == 1:
                return Resolution(things[0], [], how)
            return Resolution(None, sorted(things, key=lambda t: (t.kind, t.label)), how)

        if key in self.exact:
            resolution = pick(self.exact[key], "exact")
            if resolution.found or resolution.choices:
                return resolution
        bound = allowed_typos(key)
        candidates: set[str] = set()
        for deletion in _deletions(key):
            candidates |= self.near.get(deletion, set())
        close = sorted((distance(key, c, bound), c) for c in candidates)
        close = [(d, c) for d, c in close if d <= min(bound, allowed_typos(c))]
        if close:
            best = close[0][0]
            resolution = pick([t for d, c in close if d == best for t in self.exact[c]], "near")
            if resolution.found or resolution.choices:
                return resolution
        words = key.split()
        containing = set.intersection(*(self.words.get(w, set()) for w in words)) if words else set()
        if containing:
            return pick([t for c in sorted(containing) for t in self.exact[c]], "partial")
        return Resolution()


index = NameIndex()
