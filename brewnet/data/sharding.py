"""Data-parallel sharding of a batch source: rank r of R takes the r-th slice of each global
batch of R·B records, so R ranks with batch B see exactly the records one process with batch R·B
sees, in the same order (shuffles are seeded alike on every rank, so every rank walks the same
sequence and keeps its own slice; records it does not keep are passed over undecoded)."""
from __future__ import annotations


class ShardedSource:
    """A source (``next_batch``, ``skip``, ``close``) that yields this rank's slices only."""

    def __init__(self, source, rank: int, count: int):
        if not 0 <= rank < count:
            raise ValueError(f"rank {rank} is not in [0, {count})")
        self.source = source
        self.rank, self.count = int(rank), int(count)
        self.batch_size = int(source.batch_size)

    def next_batch(self):
        b = self.batch_size
        if self.rank:
            self.source.skip(self.rank * b)
        batch = self.source.next_batch()
        after = (self.count - 1 - self.rank) * b
        if after:
            self.source.skip(after)
        return batch

    def skip(self, n: int) -> None:
        """``n`` of this rank's records: n global batches' worth of slices, when n is a multiple
        of the batch size."""
        whole, rest = divmod(int(n), self.batch_size)
        self.source.skip(whole * self.batch_size * self.count + rest)

    def close(self) -> None:
        self.source.close()

    def __getattr__(self, name):  # data_shape, skipped, ... of the wrapped source
        return getattr(self.source, name)
