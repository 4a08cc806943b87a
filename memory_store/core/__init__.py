"""The store core, split by job. Each module adds one group of `MemoryStore` methods over the backend protocol
(memory_store.backend); none of them holds SQL or knows which engine it runs on."""
