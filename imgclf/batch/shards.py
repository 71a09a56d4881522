"""Splitting a listed input into N shards: contiguous runs of the sorted keys, sizes differing by at most
one, so the same input and N always give the same plan (a rerun of one shard redoes exactly its files) and
a shard of an archive reads neighbouring members."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from imgclf.batch.inputs import InputSource


class Shard(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    index: int = Field(ge=0)
    files: tuple[str, ...]


class ShardPlan(BaseModel):
    """The input and its shards; every key of `source.files` is in exactly one shard."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    source: InputSource
    shards: tuple[Shard, ...]

    @property
    def total(self) -> int:
        return len(self.source.files)

    def shard(self, index: int) -> Shard:
        if not 0 <= index < len(self.shards):
            raise ValueError(f"shard {index} is not in a plan of {len(self.shards)} shards")
        return self.shards[index]


def plan_shards(source: InputSource, count: int) -> ShardPlan:
    """`count` shards of `source`. More shards than files: the extra shards are empty (a pipeline's fan-out
    is fixed when it is defined, so every shard step still runs, on nothing)."""
    if count < 1:
        raise ValueError(f"the number of shards must be at least 1, got {count}")
    files, n = source.files, len(source.files)
    bounds = [i * n // count for i in range(count + 1)]
    shards = tuple(Shard(index=i, files=files[bounds[i] : bounds[i + 1]]) for i in range(count))
    return ShardPlan(source=source, shards=shards)
