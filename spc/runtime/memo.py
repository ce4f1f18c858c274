"""Facts remembered per live Python object (a torch tensor, say), checked
against a stamp of what could change inside it."""
from __future__ import annotations

import threading
import weakref


class LiveObjectMemo:
    """``put(x, stamp, value)`` / ``get(x, stamp)``.

    Ensures: ``get`` returns a value only for the same object, still alive, with
    an equal stamp (an object's ``id`` is reused after it dies, so the weak
    reference decides); an entry goes when its object dies.  None is returned
    for a miss, so None is not a value worth remembering.  ``entries`` maps
    ``id(x)`` to ``(weak reference to x, stamp, value)`` for callers that
    inline ``get`` (they only read it: ``put`` writes it, under a lock).
    """

    def __init__(self):
        self.entries: dict[int, tuple] = {}
        self._lock = threading.Lock()

    def get(self, x, stamp):
        hit = self.entries.get(id(x))
        if hit is not None and hit[1] == stamp and hit[0]() is x:
            return hit[2]
        return None

    def put(self, x, stamp, value):
        with self._lock:
            hit = self.entries.get(id(x))
            if hit is None or hit[0]() is not x:
                weakref.finalize(x, self.entries.pop, id(x), None)
            self.entries[id(x)] = (weakref.ref(x), stamp, value)
        return value
