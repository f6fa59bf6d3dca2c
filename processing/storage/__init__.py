"""Project storage: one interface over a POSIX root (a ReadWriteMany volume) and S3, with a
node-local SSD cache for inputs. Every path is confined to the project root."""

from cryokube.processing.storage.base import Storage, StorageError, StoragePathError
from cryokube.processing.storage.cache import LocalCache
from cryokube.processing.storage.paths import confine_key, confine_path
from cryokube.processing.storage.posix import PosixStorage
from cryokube.processing.storage.s3 import S3Storage

__all__ = [
    "LocalCache",
    "PosixStorage",
    "S3Storage",
    "Storage",
    "StorageError",
    "StoragePathError",
    "confine_key",
    "confine_path",
]
