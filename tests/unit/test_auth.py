"""Bearer tokens of the write endpoints: one per endpoint group, long enough, never shared."""

import json

import pytest

from sparc_ray.serving.auth import MIN_TOKEN_CHARS, BearerToken, Tokens

RELEASE = "r3lease-Tok3n-9f8e7d6c5b4a3210zyxw"  # MIN_TOKEN_CHARS, not repetitive
FEEDBACK = "feedback-tok-a1b2c3d4e5f6g7h8i9j0klmnopq"


def _error(response) -> str:
    return json.loads(response.body)["error"]


@pytest.fixture
def env(monkeypatch):
    def set_tokens(release: str | None, feedback: str | None) -> tuple[BearerToken, BearerToken]:
        for name, value in (("T_ADMIN", release), ("T_FEEDBACK", feedback)):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        return Tokens(admin_env="T_ADMIN", feedback_env="T_FEEDBACK").read()

    return set_tokens


def test_no_token_configured_disables_the_endpoint(env):
    for value in (None, ""):
        release, feedback = env(value, value)
        for token in (release, feedback):
            r = token.check(f"Bearer {value}")
            assert r.status_code == 403 and "no " in _error(r) and "configured" in _error(r)


def test_wrong_or_missing_token_is_401_and_right_token_passes(env):
    release, feedback = env(RELEASE, FEEDBACK)
    for header in (None, "", "Bearer nope", RELEASE, f"bearer {RELEASE}", f"Bearer {RELEASE}x"):
        assert release.check(header).status_code == 401, header
    assert release.check(f"Bearer {RELEASE}") is None and release.allows(f"Bearer {RELEASE}")
    assert feedback.check(f"Bearer {FEEDBACK}") is None


def test_each_token_opens_only_its_own_endpoints(env):
    release, feedback = env(RELEASE, FEEDBACK)
    assert release.check(f"Bearer {FEEDBACK}").status_code == 401
    assert feedback.check(f"Bearer {RELEASE}").status_code == 401


def test_a_short_token_disables_its_endpoints_and_says_why(env, caplog):
    short = "x" * (MIN_TOKEN_CHARS - 1)
    release, feedback = env(short, FEEDBACK)
    r = release.check(f"Bearer {short}")  # even the right value is refused
    assert r.status_code == 403 and f"shorter than {MIN_TOKEN_CHARS}" in _error(r)
    assert "T_ADMIN" in _error(r) and short not in _error(r) and short not in caplog.text
    assert feedback.check(f"Bearer {FEEDBACK}") is None  # the other group is unaffected


def test_one_token_for_both_groups_is_refused_for_feedback(env):
    release, feedback = env(RELEASE, RELEASE)
    assert release.check(f"Bearer {RELEASE}") is None
    r = feedback.check(f"Bearer {RELEASE}")
    assert r.status_code == 403 and "must differ" in _error(r)


def test_tokens_are_compared_stripped_so_padding_is_not_a_second_token(env):
    release, feedback = env(RELEASE, f" {RELEASE}\n")  # the admin token plus whitespace
    r = feedback.check(f"Bearer {RELEASE}")
    assert r.status_code == 403 and "must differ" in _error(r)
    release, feedback = env(f"{RELEASE} ", FEEDBACK)
    assert release.check(f"Bearer {RELEASE}") is None
    assert release.check(f" Bearer {RELEASE}\t") is None


@pytest.mark.parametrize("weak", ["a" * 32, "ab" * 20, "abcd" * 10, "0123456" * 6])
def test_a_repetitive_token_disables_its_endpoints(env, weak):
    release, _ = env(weak, FEEDBACK)
    r = release.check(f"Bearer {weak}")
    assert r.status_code == 403 and "too repetitive" in _error(r)
