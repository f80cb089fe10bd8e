"""Property: any sequence of image writes, tags and removals keeps the store consistent.

After every step each name resolves to a whole, verifiable image, and GC has deleted exactly the
blobs no name reaches.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from sealer.errors import ImageError
from sealer.image.store import ImageStore
from tests.registry_fixture import make_test_image

LAYER_POOL = [f"layer-{i}".encode() * 50 for i in range(6)]
NAMES = [f"reg.local/app:v{i}" for i in range(4)]

op = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(NAMES), st.lists(st.integers(0, 5), min_size=1, max_size=3)),
    st.tuples(st.just("tag"), st.sampled_from(NAMES), st.sampled_from(NAMES)),
    st.tuples(st.just("rmi"), st.sampled_from(NAMES), st.booleans()),
)


def check(store: ImageStore, after_gc: bool) -> None:
    live: set[str] = set()
    for rec in store.records():
        img = store.select(rec.name)
        for d in [
            img.descriptor.digest,
            img.manifest.config.digest,
            *(x.digest for x in img.manifest.layers),
        ]:
            store.verify_blob(d)
        live |= store.reachable(rec.descriptor)
    on_disk = {f"sha256:{p.name}" for p in store.blobs_dir.iterdir()}
    assert live <= on_disk
    if after_gc:
        assert on_disk == live


@settings(max_examples=40, deadline=None)
@given(st.lists(op, max_size=12))
def test_store_stays_consistent(ops: list[tuple[object, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = ImageStore(Path(tmp) / "images")
        for i, (kind, a, b) in enumerate(ops):
            collected = False
            if kind == "add":
                layers = [LAYER_POOL[j] for j in b]  # type: ignore[union-attr]
                make_test_image(store, str(a), layers, created=f"2026-01-01T00:00:{i:02d}Z")
            elif kind == "tag":
                if store.find(str(a)):
                    store.tag(str(b), store.resolve(str(a)).descriptor)
            else:
                try:
                    store.remove(str(a), force=bool(b))
                    collected = True
                except ImageError as err:
                    assert "not in the local store" in err.message
            check(store, after_gc=collected)
        for rec in store.records():
            store.remove(rec.name, force=True)
        assert list(store.blobs_dir.iterdir()) == []
