"""A child process for the crash and concurrency tests: adds batches (and searches) on a shared home."""

from __future__ import annotations

import sys

from memory_store import MemoryStore, NewMemory, StoreSettings


def main() -> None:
    home, user, batches, batch_size, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    store = MemoryStore(StoreSettings(home=home))
    for b in range(batches):
        items = [
            NewMemory(
                text=f"{user} batch {b} fact {i}: the meeting moved to room {i}", user_id=user, metadata={"batch": b}
            )
            for i in range(batch_size)
        ]
        store.add_many(items)
        if mode == "search":
            hits = store.search(f"{user} meeting room", user, limit=5)
            assert all(h.memory.user_id == user for h in hits)
        print(f"batch {b} done", flush=True)
    store.close()


if __name__ == "__main__":
    main()
