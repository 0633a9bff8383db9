"""The MongoDB archive: the durable tier behind the hot one (write-behind, rehydration)."""
