"""A dataset's ``preserve`` (the copy's --preserve) is validated at load."""

from __future__ import annotations

import pytest


def test_dataset_preserve_is_validated():
    from pydantic import ValidationError

    from platform_assets.config import Dataset

    base = {"source": {"cluster": "a", "path": "/x"}, "targets": [{"cluster": "b", "path": "/y"}]}
    assert Dataset.model_validate(base).preserve == ("times",)
    ds = Dataset.model_validate({**base, "preserve": "owner,group,times"})
    assert ds.preserve == ("group", "owner", "times")
    with pytest.raises(ValidationError, match="xattr"):
        Dataset.model_validate({**base, "preserve": ["times", "xattr"]})
