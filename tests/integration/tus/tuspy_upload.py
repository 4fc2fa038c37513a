"""One run of the Python tus client (tuspy) against holdq, for
tests/integration/tus.rs: `first` stops half-way, `second` resumes from the
URL it stored and the server's offset. Prints the offset it started from."""

import json
import sys

from tusclient import client
from tusclient.storage import filestorage

server, token, path, sha256, storage, mode = sys.argv[1:7]
tus = client.TusClient(
    server + "/api/v1/tus/", headers={"Authorization": "Bearer " + token}
)
uploader = tus.uploader(
    file_path=path,
    chunk_size=64 * 1024,
    metadata={"filename": "alpha-1.0.0.tar.gz", "sha256": sha256},
    store_url=True,
    url_storage=filestorage.FileStorage(storage),
    upload_checksum=True,
)
started_at = uploader.offset
size = uploader.get_file_size()
uploader.upload(stop_at=size // 2 if mode == "first" else None)
print(json.dumps({"started_at": started_at, "offset": uploader.offset, "size": size}))
