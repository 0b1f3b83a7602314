"""The addresses taken in one pool: a set of ints, a serial cursor and a
sparse "fullness" summary that lets scans leap over dense runs.

Memory grows with what is taken, never with the pool size: a 10.0.0.0/8 or
an IPv6 /64 costs nothing until addresses are handed out.

Why the summary: with only a set, finding a free address means testing
addresses one by one, and in a dense pool (a long run taken, the cursor
wrapped to its start) that is one test per taken address — milliseconds per
allocation.  So addresses are grouped in aligned blocks of 64, blocks of 64
blocks, and so on.  Level 0 holds, per touched 64-block, a 64-bit mask of
its taken addresses; level k (k >= 1) holds, per level-k block, a mask of
which of its 64 children are *full*.  Only touched blocks have an entry
(a few bytes per 64 taken addresses when dense, one small int per taken
address at worst), and a level above 0 changes only when a block fills or
stops being full, so an allocation or a release usually costs one set
operation and one dict update.  A scan finds the first free address of a
64-block with one lowest-zero-bit, and crosses a full block by climbing the
masks to the first non-full block after it, so a run of n taken addresses
is crossed in O(log64 n) dict lookups whatever its length.
"""

from __future__ import annotations

_BITS = 6
_FAN = 1 << _BITS  # addresses per level-0 block, blocks per higher block
_ALL = (1 << _FAN) - 1  # a mask with every child full


class AddressSet:
    """Taken addresses of the integer range [first, last].

    `reserved` addresses (network, broadcast, aux) are taken for good:
    releasing one is ignored.  Dynamic allocation stays in [lo, hi] (the
    sub-pool, or the pool)."""

    __slots__ = ("first", "last", "lo", "hi", "_used", "_reserved", "_levels", "_cursor")

    def __init__(self, first: int, last: int, lo: int, hi: int) -> None:
        self.first, self.last, self.lo, self.hi = first, last, lo, hi
        self._used: set[int] = set()
        self._reserved: set[int] = set()
        self._levels: list[dict[int, int]] = [{}]
        self._cursor = lo - 1  # the address handed out last

    def __len__(self) -> int:
        return len(self._used)

    def __contains__(self, address: int) -> bool:
        return address in self._used

    def reserve(self, address: int) -> None:
        """Take `address` for good (idempotent)."""
        self._reserved.add(address)
        if address not in self._used:
            self.take(address)

    def take(self, address: int) -> None:
        """Mark a free address taken; the caller checked it is free.  The
        set answers membership; the masks only guide the scans."""
        self._used.add(address)
        masks = self._levels[0]
        key = address >> _BITS
        mask = masks.get(key, 0) | 1 << (address & (_FAN - 1))
        masks[key] = mask
        if mask == _ALL:
            self._block_filled(key)

    def give_back(self, address: int) -> None:
        """Free a taken, non-reserved address; anything else is a no-op."""
        if address not in self._used or address in self._reserved:
            return
        self._used.remove(address)
        masks = self._levels[0]
        key = address >> _BITS
        was = masks[key]
        mask = was & ~(1 << (address & (_FAN - 1)))
        if mask:
            masks[key] = mask
        else:
            del masks[key]
        if was == _ALL:
            self._block_emptied(key)

    def _block_filled(self, block: int) -> None:
        """Set the "full" bit of `block` in its parent, and upwards while a
        parent fills in turn."""
        levels = self._levels
        level = 1
        while True:
            if level == len(levels):
                levels.append({})
            parent, bit = block >> _BITS, 1 << (block & (_FAN - 1))
            mask = levels[level].get(parent, 0) | bit
            levels[level][parent] = mask
            if mask != _ALL:
                return
            block, level = parent, level + 1

    def _block_emptied(self, block: int) -> None:
        """Clear the "full" bit of `block` in its parent, and upwards while a
        parent was full."""
        levels = self._levels
        level = 1
        while True:
            parent, bit = block >> _BITS, 1 << (block & (_FAN - 1))
            was = levels[level][parent]
            if was == bit:
                del levels[level][parent]
            else:
                levels[level][parent] = was & ~bit
            if was != _ALL:
                return
            block, level = parent, level + 1

    def next_free(self, start: int, stop: int) -> int | None:
        """The lowest free address in [start, stop], or None."""
        masks = self._levels[0]
        address = start
        while address <= stop:
            mask = masks.get(address >> _BITS, 0)
            if mask == _ALL:
                address = self._skip_full(address)
                continue
            offset = address & (_FAN - 1)
            free = ~mask >> offset  # lowest set bit: first free at or after offset
            step = (free & -free).bit_length() - 1
            if offset + step < _FAN:
                address += step
                return address if address <= stop else None
            address = (address | (_FAN - 1)) + 1
        return None

    def _skip_full(self, address: int) -> int:
        """The start of the first block after `address` that is not full,
        given that the 64-block holding `address` is full.

        Invariant of the climb: everything from `address` to the end of its
        level-(k-1) block (size 2**shift) is taken.  At level k the mask says
        which sibling blocks are full; if all the following siblings are, the
        invariant holds one level up and we climb, else we land on the first
        non-full sibling."""
        levels = self._levels
        depth = len(levels)
        level = 1
        while True:
            shift = _BITS * level
            mask = levels[level].get(address >> (shift + _BITS), 0) if level < depth else 0
            child = (address >> shift) & (_FAN - 1)
            free_after = ~(mask >> (child + 1))
            run = (free_after & -free_after).bit_length() - 1  # full siblings after child
            if child + 1 + run < _FAN:
                return ((address >> shift) + 1 + run) << shift
            level += 1

    def first_free(self) -> int | None:
        """The lowest free address of the whole pool (gateway choice)."""
        return self.next_free(self.first, self.last)

    def take_serial(self) -> int | None:
        """Take a free address of [lo, hi], chosen serially: the search
        starts just after the address handed out last and wraps around.

        Round-robin rather than lowest-free so that an address released a
        moment ago (a container that just stopped) is not handed straight to
        the next container, which would inherit stale ARP/neighbour entries,
        conntrack state and DNS answers still cached for the old owner.
        """
        start = self._cursor + 1 if self._cursor < self.hi else self.lo
        found = self.next_free(start, self.hi)
        if found is None and start > self.lo:
            found = self.next_free(self.lo, start - 1)
        if found is not None:
            self._cursor = found
            self.take(found)
        return found
