"""Progress inside a call: fractions map onto parts, and a bar moves in whole images and ends at the chunk."""

from counterclip import progress


class Bar:
    def __init__(self):
        self.n, self.updates = 0, []

    def update(self, k):
        self.n += k
        self.updates.append(k)


def test_advance_is_silent_without_a_listener():
    progress.advance(1, 2)  # nothing listens: no error, nothing to see


def test_parts_map_inner_fractions_onto_the_outer_call():
    seen = []
    with progress.listening(seen.append):
        for k in range(2):
            with progress.part(k, 2):
                for i in range(4):
                    progress.advance(i + 1, 4)
    assert seen == [0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0]


def test_per_chunk_bar_moves_during_a_chunk_and_ends_at_its_size():
    bar = Bar()

    def compute(cs, ce):
        for i in range(10):
            progress.advance(i + 1, 10)
        return {}

    run, on_chunk = progress.per_chunk(compute, bar)
    for cs, ce in [(0, 64), (64, 100)]:
        run(cs, ce)
        on_chunk(ce - cs)
    assert bar.n == 100 and len(bar.updates) > 2 and all(u >= 0 for u in bar.updates)
    on_chunk(64)  # a chunk found saved: counted whole, once
    assert bar.n == 164
