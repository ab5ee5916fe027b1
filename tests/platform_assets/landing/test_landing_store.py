"""The landing store keeps every path under its root: names come from batch records and
``pending.json`` in the output, which a person or a bad tool may have edited."""

from __future__ import annotations

import pytest

from platform_assets.landing.store import Store, StoreError


@pytest.mark.parametrize("rel", ["../secret.csv", "a/../../secret.csv", "/etc/passwd", "a//b",
                                 "./x", "a/"])
def test_a_path_leaving_the_store_root_is_refused(tmp_path, rel) -> None:
    root = tmp_path / "lake" / "raw"
    root.mkdir(parents=True)
    (tmp_path / "lake" / "secret.csv").write_text("id\n1\n")
    store = Store(str(root), "landing.orders.raw")
    with pytest.raises(StoreError, match=r"landing\.orders\.raw: .* is not a path under"):
        store.read_bytes(rel)
    with pytest.raises(StoreError):
        store.is_file(rel)
    with pytest.raises(StoreError), store.local_file(rel):
        pass
    with pytest.raises(StoreError):
        store.write_bytes(rel, b"x")
    assert (tmp_path / "lake" / "secret.csv").read_text() == "id\n1\n"


def test_paths_under_the_root_work(tmp_path) -> None:
    store = Store(str(tmp_path), "landing.orders.output")
    store.write_bytes("_landing/batches/b1.json", b"{}")
    assert store.read_bytes("_landing/batches/b1.json") == b"{}"
    assert store.is_file("_landing/batches/b1.json") and store.read_bytes("none.json") is None
    assert store.path("") == str(tmp_path)
