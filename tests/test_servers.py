"""Smoke tests proving each server fixture is a real server that answers its protocol."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from support import servers


@pytest.mark.mongo
async def test_mongo_unique_index_rejects_duplicate(
    mongo_server: servers.MongoServer, mongo_db_name: str
) -> None:
    from pymongo import AsyncMongoClient
    from pymongo.errors import DuplicateKeyError

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server.uri)
    try:
        coll = client[mongo_db_name]["items"]
        await coll.create_index("uid", unique=True)
        await coll.insert_one({"uid": "a", "n": 1})
        with pytest.raises(DuplicateKeyError):
            await coll.insert_one({"uid": "a", "n": 2})
        updated = await coll.find_one_and_update(
            {"uid": "a"}, {"$inc": {"n": 1}}, return_document=True
        )
        assert updated is not None
        assert updated["n"] == 2
        assert await coll.count_documents({}) == 1
    finally:
        await client.close()


@pytest.mark.s3
def test_s3_multipart_upload_round_trips(s3_client: Any, s3_bucket: str) -> None:
    part_size = 5 * 1024 * 1024  # S3's minimum part size (all parts but the last)
    parts = [bytes([i]) * part_size for i in range(2)] + [b"tail"]
    upload = s3_client.create_multipart_upload(Bucket=s3_bucket, Key="movies/a.tif")
    etags = []
    for number, body in enumerate(parts, start=1):
        r = s3_client.upload_part(
            Bucket=s3_bucket,
            Key="movies/a.tif",
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=body,
        )
        etags.append({"ETag": r["ETag"], "PartNumber": number})
    s3_client.complete_multipart_upload(
        Bucket=s3_bucket,
        Key="movies/a.tif",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": etags},
    )
    got = s3_client.get_object(Bucket=s3_bucket, Key="movies/a.tif")["Body"].read()
    assert got == b"".join(parts)


@pytest.mark.k8s
async def test_k8s_custom_resource_is_listed_back(k8s_emulator: Any) -> None:
    import kubernetes

    config = kubernetes.client.Configuration()
    config.host = str(k8s_emulator.url).rstrip("/")
    api = kubernetes.client.CustomObjectsApi(kubernetes.client.ApiClient(config))
    body = {
        "apiVersion": "cryokube.io/v1alpha1",
        "kind": "Project",
        "metadata": {"name": "apoferritin", "namespace": "lab-a"},
        "spec": {"gpuQuota": 4},
    }
    # The sync client must not block the loop that serves the emulator: run it in a thread.
    await asyncio.to_thread(
        api.create_namespaced_custom_object,
        "cryokube.io",
        "v1alpha1",
        "lab-a",
        "projects",
        body,
    )
    listed = await asyncio.to_thread(
        api.list_namespaced_custom_object, "cryokube.io", "v1alpha1", "lab-a", "projects"
    )
    assert [item["metadata"]["name"] for item in listed["items"]] == ["apoferritin"]
    assert listed["items"][0]["spec"] == {"gpuQuota": 4}
