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
    # acl and xattr are copy items since the HDFS back ends keep them
    assert Dataset.model_validate({**base, "preserve": ["times", "xattr", "acl"]}).preserve == (
        "acl", "times", "xattr")
    with pytest.raises(ValidationError, match="colour"):
        Dataset.model_validate({**base, "preserve": ["times", "colour"]})
