#!/usr/bin/env python3
"""moto's server (S3, Glue, STS, S3 Tables on one port) with Glue's optimistic locking added and one
S3 Tables answer fixed.

AWS Glue's UpdateTable takes a `VersionId`: when the table's current version is another, Glue refuses the
update with ConcurrentModificationException. This is the compare-and-swap every Iceberg Glue catalog (Java's,
pyiceberg's, k2i's) relies on so that two writers never overwrite each other's commit. moto 5.2 accepts the
parameter and ignores it, which would let k2i's concurrency tests pass against a server that cannot detect
a lost update. This launcher makes moto check it, atomically, as Glue does; everything else is moto's.

Usage: moto_server.py [-D... markers] [moto server arguments, e.g. -H 127.0.0.1 -p 18333]
(scripts/stack.sh marks its processes with -Dk2i.stack.* arguments; they are dropped here.)
"""

import sys
import threading

from moto.glue import models, responses
from moto.s3tables import models as s3tables_models
from moto.glue.exceptions import GlueClientError
from moto.server import main


class ConcurrentModificationException(GlueClientError):
    def __init__(self, message: str) -> None:
        super().__init__("ConcurrentModificationException", message)


_LOCK = threading.Lock()
_update_table = models.GlueBackend.update_table


def update_table(self, database_name, table_name, table_input, version_id=None):
    with _LOCK:
        if version_id is not None:
            current = str(self.get_table(database_name, table_name)._current_version)
            if str(version_id) != current:
                raise ConcurrentModificationException(
                    f"Update table failed due to concurrent modifications: version {version_id} is not the "
                    f"current version {current} of {database_name}.{table_name}"
                )
        return _update_table(self, database_name, table_name, table_input)


def update_table_response(self):
    database_name = self.parameters.get("DatabaseName")
    table_input = self.parameters.get("TableInput")
    self.glue_backend.update_table(
        database_name, table_input.get("Name"), table_input, self.parameters.get("VersionId")
    )
    return responses.EmptyResult()


models.GlueBackend.update_table = update_table
responses.GlueResponse.update_table = update_table_response

# S3 Tables' GetTable answers `managedByService` with the managing service's name, absent for a customer's
# table; moto 5.2 answers `false`, which the AWS SDKs' typed deserializers (Rust's, Java's) refuse.
_table_init = s3tables_models.Table.__init__


def table_init(self, *args, **kwargs):
    _table_init(self, *args, **kwargs)
    if self.managed_by_service is False:
        self.managed_by_service = None


s3tables_models.Table.__init__ = table_init

if __name__ == "__main__":
    main([a for a in sys.argv[1:] if not a.startswith("-Dk2i.stack.")])
