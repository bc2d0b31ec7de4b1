"""Prefect wiring: which API this process talks to, and where task results are persisted.

What this module is:
  * `use_api(settings)`: points this process (and the processes it starts) at the configured
    Prefect server by exporting PREFECT_API_URL; called before anything reads Prefect settings,
    so a run is recorded on the stack's server, never on a throw-away ephemeral one.
  * `ensure_result_storage(settings)`: saves (once; again only when a value changed) the
    `prefect_aws` blocks that hold cached task results in the pipeline's own bucket:
    `aws-credentials/gan-s3` (S3 keys in SecretStr fields, endpoint, path-style addressing) and
    `s3-bucket/gan-results` (bucket + folder `prefect/results`). Tasks name the bucket block by
    its slug `RESULT_STORAGE`, so any process that runs the flow (`gan retrain`, the served
    deployment's subprocess, a work-pool worker) reads and writes the same cache records.

What it is not: no flow logic; reads no environment variable (the values come from `Settings`).
The keys live in the Prefect server's block store like any Prefect credentials block; they
never enter flow parameters, task results, logs or artifacts.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from gan.core.settings import Settings

if TYPE_CHECKING:  # prefect_aws imports boto3 and Prefect: only when the blocks are used
    from prefect_aws import AwsCredentials
    from prefect_aws.s3 import S3Bucket

CREDENTIALS_BLOCK = "gan-s3"
RESULTS_BLOCK = "gan-results"
RESULT_STORAGE = f"s3-bucket/{RESULTS_BLOCK}"  # what tasks pass as `result_storage`
RESULTS_FOLDER = "prefect/results"  # s3://<bucket>/prefect/results/<cache key>


def use_api(settings: Settings) -> str:
    """Export PREFECT_API_URL (and PREFECT_API_AUTH_STRING when `settings` has one) for this
    process and its children; returns the URL.

    Prefect reads its settings from the environment when it is imported; if it already was,
    its global settings are refreshed. Without a configured server the error names what to do."""
    url = settings.require_prefect()
    os.environ["PREFECT_API_URL"] = url
    if settings.prefect_api_auth_string is not None:  # the server asks for it (basic auth)
        os.environ["PREFECT_API_AUTH_STRING"] = settings.prefect_api_auth_string.get_secret_value()
    if "prefect.context" in sys.modules:
        # Prefect already read its settings (imported earlier): make it read them again.
        from prefect.context import refresh_global_settings_context  # lazy: see above

        refresh_global_settings_context()
    return url


def credentials_block(settings: Settings) -> AwsCredentials:
    """An AwsCredentials block for the pipeline's S3 endpoint (unsaved)."""
    from prefect_aws import AwsCredentials  # lazy: imports Prefect (before use_api) and boto3
    from prefect_aws.client_parameters import AwsClientParameters  # lazy: as above

    endpoint, key, secret = settings.require_s3()
    return AwsCredentials(
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name=settings.aws_default_region,
        aws_client_parameters=AwsClientParameters(
            endpoint_url=endpoint,
            use_ssl=endpoint.startswith("https://"),
            # Same addressing as gan.io.storage: SeaweedFS and MinIO want path-style requests.
            config={"s3": {"addressing_style": "path"}, "signature_version": "s3v4"},
        ),
    )


def _same(saved: object, wanted: object) -> bool:
    """Field-by-field equality, secrets compared by value (SecretStr compares that way)."""
    return saved.model_dump() == wanted.model_dump()  # type: ignore[attr-defined]


def ensure_result_storage(settings: Settings) -> S3Bucket:
    """The saved `s3-bucket/gan-results` block for `settings`' bucket, (re)saved if it differs.

    Idempotent and cheap when nothing changed (two reads). A concurrent saver writes the same
    values, so `overwrite=True` makes the race harmless."""
    from prefect_aws import AwsCredentials  # lazy: imports Prefect (before use_api) and boto3
    from prefect_aws.s3 import S3Bucket  # lazy: as above

    creds = credentials_block(settings)
    try:
        saved_creds = AwsCredentials.load(CREDENTIALS_BLOCK)
    except ValueError:  # Prefect raises ValueError for a block name it does not know
        saved_creds = None
    if saved_creds is None or not _same(saved_creds, creds):
        creds.save(CREDENTIALS_BLOCK, overwrite=True)
        saved_creds = AwsCredentials.load(CREDENTIALS_BLOCK)
    bucket = S3Bucket(bucket_name=settings.s3_bucket, credentials=saved_creds,
                      bucket_folder=RESULTS_FOLDER)
    try:
        saved = S3Bucket.load(RESULTS_BLOCK)
    except ValueError:
        saved = None
    if (saved is None or saved.bucket_name != bucket.bucket_name
            or saved.bucket_folder != bucket.bucket_folder
            or saved.credentials._block_document_id != saved_creds._block_document_id):
        bucket.save(RESULTS_BLOCK, overwrite=True)
        saved = S3Bucket.load(RESULTS_BLOCK)
    return saved
