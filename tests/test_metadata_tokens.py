"""Job tokens: HMAC signature, job scope and expiry."""

from __future__ import annotations

import pytest
from cryokube.operator.metadata.errors import Unauthenticated
from cryokube.operator.metadata.tokens import mint_job_token, verify_job_token

SECRET = "s" * 32
NOW_S = 1_800_000_000.0


def test_round_trip_carries_project_job_and_expiry() -> None:
    token = mint_job_token(SECRET, project="apo", job="uid-1", ttl_s=60, now_s=NOW_S)
    claims = verify_job_token(SECRET, token, job="uid-1", now_s=NOW_S + 59)
    assert (claims.project, claims.job, claims.expires_at_s) == ("apo", "uid-1", NOW_S + 60)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t: t, "job token is scoped to another job"),
        (lambda t: t[:-2] + ("AA" if t[-2:] != "AA" else "BB"), "job token signature is invalid"),
        (lambda t: "v2" + t[2:], "job token is malformed"),
        (lambda t: t.split(".")[0], "job token is malformed"),
    ],
)
def test_forged_or_foreign_tokens_are_refused(mutate: object, message: str) -> None:
    token = mint_job_token(SECRET, project="apo", job="uid-1", ttl_s=60, now_s=NOW_S)
    with pytest.raises(Unauthenticated, match=message):
        verify_job_token(SECRET, mutate(token), job="uid-2", now_s=NOW_S)  # type: ignore[operator]


def test_expired_and_other_secret_are_refused() -> None:
    token = mint_job_token(SECRET, project="apo", job="uid-1", ttl_s=60, now_s=NOW_S)
    with pytest.raises(Unauthenticated, match="expired"):
        verify_job_token(SECRET, token, job="uid-1", now_s=NOW_S + 60)
    with pytest.raises(Unauthenticated, match="signature"):
        verify_job_token("t" * 32, token, job="uid-1", now_s=NOW_S)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"secret": "short"}, "secret"),
        ({"project": ""}, "project"),
        ({"job": ""}, "job"),
        ({"ttl_s": 0}, "ttl_s"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"secret": SECRET, "project": "apo", "job": "j", "ttl_s": 1, **kwargs}
    with pytest.raises(ValueError, match=field):
        mint_job_token(**args)  # type: ignore[arg-type]
