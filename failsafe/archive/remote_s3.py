"""The S3 kind of replica storage (locations.py), imported only when one is opened: boto3
and botocore are a fifth of an idle process's memory, and most servers use no S3 replica."""

from __future__ import annotations

from botocore.config import Config
from storages.backends.s3 import S3Storage

from .locations import CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS, _Location


def open_s3(location: _Location) -> S3Storage:
    style = location.options.get("addressing_style", "auto")
    return S3Storage(
        bucket_name=location.host,
        location=location.path.lstrip("/"),
        endpoint_url=location.options.get("endpoint_url"),
        region_name=location.options.get("region"),
        addressing_style=style,
        # Names are never overwritten, on S3 as on the two other kinds.
        file_overwrite=False,
        # Credentials only from the AWS environment (read by boto3 at connection time).
        access_key=None,
        secret_key=None,
        security_token=None,
        client_config=Config(
            s3={"addressing_style": style},
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            read_timeout=READ_TIMEOUT_SECONDS,
            retries={"mode": "standard", "max_attempts": 3},
        ),
    )
