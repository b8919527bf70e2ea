"""Helpers shared by the data tests and the multi-process helper script (not a test module)."""
import dataclasses
import threading

from gemini_embed.data import pipeline

NAMES = ["scifact-train", "stsb-train", "mrpc-train", "snli-triplets-validation"]
SHAPE = pipeline.BatchShape(global_batch_size=8, query_len=32, positive_len=64, num_negatives=1)
SEED = 5


class Recording:
    """A data source that records which rows were read (thread-safe)."""

    def __init__(self, records):
        self.records, self.read, self.lock = records, [], threading.Lock()

    def __len__(self):
        return len(self.records)

    def __getitems__(self, rows):
        with self.lock:
            self.read.append([int(r) for r in rows])
        return self.records.__getitems__(rows)


def recorded_sources(sources):
    return [dataclasses.replace(s, records=Recording(s.records)) for s in sources]
