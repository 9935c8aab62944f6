"""The S3 object version recorded as a dataset's data version, against moto's S3 server: a
versioned bucket gives the version id, a bucket without versioning gives none, and every
failure to ask (no such bucket or object, a rejected or missing credential) is a DataError
naming it, never read as "unversioned"."""

from __future__ import annotations

import pytest
from moto.core.authorization import enable_iam_authentication

from sparc_ray.data.loading import DataError, data_version
from tests.s3_server import running_s3, s3_uri

BODY = b"a,b\n1,2\n"
CREDENTIAL_SOURCES = (  # where boto3 looks for credentials, besides files and IMDS
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
)


@pytest.fixture(scope="module")
def s3():
    with running_s3() as (endpoint, client):
        client.create_bucket(Bucket="plain")
        client.put_object(Bucket="plain", Key="d.csv", Body=BODY)
        client.create_bucket(Bucket="versioned")
        client.put_bucket_versioning(
            Bucket="versioned", VersioningConfiguration={"Status": "Enabled"}
        )
        yield endpoint, client


def test_a_versioned_object_gives_its_latest_version(s3):
    endpoint, client = s3
    first = client.put_object(Bucket="versioned", Key="d.csv", Body=BODY)
    second = client.put_object(Bucket="versioned", Key="d.csv", Body=BODY + b"3,4\n")
    found = data_version(s3_uri(endpoint, "versioned", "d.csv"))
    assert found == {
        "kind": "s3",
        "version_id": second["VersionId"],
        "etag": second["ETag"].strip('"'),
    }
    assert second["VersionId"] != first["VersionId"]


def test_a_bucket_without_versioning_gives_none(s3):
    assert data_version(s3_uri(s3[0], "plain", "d.csv")) is None


@pytest.mark.parametrize("bucket, key", [("absent", "d.csv"), ("plain", "absent.csv")])
def test_no_such_bucket_or_object_is_an_error_not_unversioned(s3, bucket, key):
    with pytest.raises(DataError, match=rf"object version of s3://{bucket}/{key}.*answered 404"):
        data_version(s3_uri(s3[0], bucket, key))


def test_a_rejected_credential_is_an_error_not_unversioned(s3):
    # The server checks credentials against its IAM: the test key is no user's key there.
    with enable_iam_authentication(), pytest.raises(DataError, match="answered 403") as err:
        data_version(s3_uri(s3[0], "plain", "d.csv"))
    assert "credentials" in str(err.value)


def test_no_credentials_at_all_is_an_error_not_unversioned(s3, monkeypatch, tmp_path):
    for var in CREDENTIAL_SOURCES:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(DataError, match="Unable to locate credentials"):
        data_version(s3_uri(s3[0], "plain", "d.csv"))
