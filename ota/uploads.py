"""The multipart upload of a release image, bounded while Django parses it: past
MESHHUB_OTA_MAX_IMAGE_BYTES (plus room for the manifest part) parsing stops and the image is
dropped, so an endless upload fills neither memory nor the temporary directory. Parts
larger than FILE_UPLOAD_MAX_MEMORY_SIZE go to a temporary file, never whole to memory.

Upload handlers must be set before anything reads the body: the API view sets them when it
wraps the request (before authentication, whose CSRF check may read the form)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http import HttpRequest

MANIFEST_ROOM = 64 * 1024


class LimitedUploadHandler(FileUploadHandler):
    def __init__(self, request: HttpRequest | None = None, limit: int | None = None) -> None:
        super().__init__(request)
        self.limit = (limit if limit is not None else settings.OTA_MAX_IMAGE_BYTES) + MANIFEST_ROOM
        self.received = 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        self.received += len(raw_data)
        if self.received > self.limit:
            if self.request is not None:
                self.request.meshhub_upload_too_large = self.limit - MANIFEST_ROOM  # type: ignore[attr-defined]
            raise StopUpload(connection_reset=False)
        return raw_data

    def file_complete(self, file_size: int) -> Any:
        return None  # the next handler (memory or temporary file) keeps the data


def limit_uploads(request: HttpRequest) -> None:
    request.upload_handlers.insert(0, LimitedUploadHandler(request))
