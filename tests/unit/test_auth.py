"""Bearer-token check of the write endpoints."""

import json

from sparc_ray.serving.responses import check_bearer


def test_no_token_configured_disables_the_endpoint():
    for token in (None, ""):
        r = check_bearer(token, "Bearer anything")
        assert r.status_code == 403 and "disabled" in json.loads(r.body)["error"]


def test_wrong_or_missing_token_is_401_and_right_token_passes():
    assert check_bearer("s3cret", None).status_code == 401
    assert check_bearer("s3cret", "Bearer nope").status_code == 401
    assert check_bearer("s3cret", "s3cret").status_code == 401
    assert check_bearer("s3cret", "Bearer s3cret") is None
