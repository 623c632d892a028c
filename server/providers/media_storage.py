"""Where WhatsApp media bytes are kept: a local directory (`MEDIA_DIR`) by default, or an
S3-compatible bucket (`MEDIA_S3_BUCKET`, through boto3) when one is configured.

Keys are made by the caller from the business id and the bytes' sha256 (`server.media`), never from
a name a sender chose, so a key is always a safe relative path and the same bytes are kept once per
business. The store knows nothing of the database: it puts, gets and deletes bytes by key.
"""

from __future__ import annotations

import functools
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Protocol

from server.config import Settings

# `business-<id>/<sha256 hex>`: the only shape of key the stores accept, so no key can leave its root.
_KEY = re.compile(r"^business-\d{1,12}/[0-9a-f]{64}$")


class MediaNotFound(LookupError):
    """No bytes are stored under this key (deleted by retention, or never written)."""


class MediaStorageError(RuntimeError):
    """The store could not be reached or refused the operation (the message is worth retrying)."""


class MediaStorage(Protocol):
    name: str

    def put(self, key: str, data: bytes, content_type: str) -> None: ...

    def get(self, key: str) -> bytes: ...

    def delete(self, key: str) -> None: ...


def check_key(key: str) -> str:
    if not _KEY.match(key):
        raise ValueError(f"not a media key: {key!r}")
    return key


class LocalMediaStorage:
    """Files under one directory: `<root>/business-<id>/<sha256>`, written to a temporary file first
    and renamed, so a reader never sees half a file."""

    name = "local"

    def __init__(self, root: Path):
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise MediaNotFound(key) from None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class S3MediaStorage:
    """Objects in an S3-compatible bucket (AWS S3, MinIO, R2…), keys as they are."""

    name = "s3"

    def __init__(self, bucket: str, endpoint_url: str, region: str, access_key_id: str, secret_access_key: str):
        import boto3  # only deployments that keep media in a bucket pay for importing it
        from botocore.config import Config

        self.bucket = bucket
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=endpoint_url or None,
            region_name=region or None,
            aws_access_key_id=access_key_id or None,
            aws_secret_access_key=secret_access_key or None,
            config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"}),
        )

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self._call("put_object", Key=check_key(key), Body=data, ContentType=content_type)

    def get(self, key: str) -> bytes:
        answer = self._call("get_object", Key=check_key(key))
        return answer["Body"].read()

    def delete(self, key: str) -> None:
        self._call("delete_object", Key=check_key(key))

    def _call(self, operation: str, **params: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, operation)(Bucket=self.bucket, **params)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404", "NotFound"):
                raise MediaNotFound(params.get("Key", "")) from None
            raise MediaStorageError(f"the media bucket answered {code or 'an error'} to {operation}") from None
        except BotoCoreError as exc:
            # The exception's text may carry the endpoint, never the keys; its type says enough.
            raise MediaStorageError(f"the media bucket could not be reached ({type(exc).__name__})") from None


def media_storage(settings: Settings) -> MediaStorage:
    """The configured store, one per configuration and process (a boto3 client is worth keeping)."""
    if settings.media_s3_bucket:
        return _s3_storage(
            settings.media_s3_bucket,
            settings.media_s3_endpoint_url,
            settings.media_s3_region,
            settings.media_s3_access_key_id,
            settings.media_s3_secret_access_key,
        )
    return LocalMediaStorage(settings.media_path)


@functools.lru_cache(maxsize=8)
def _s3_storage(bucket: str, endpoint: str, region: str, key_id: str, secret: str) -> S3MediaStorage:
    return S3MediaStorage(bucket, endpoint, region, key_id, secret)
