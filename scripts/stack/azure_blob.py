#!/usr/bin/env python3
"""A minimal Azure Blob API client (standard library only) for the stack's azure service (Azurite).

stack.sh uses it to probe Azurite with a real signed request and to create the test container;
tests use it to look at what k2i wrote (block lists, blob listings) without trusting k2i's own
client. Requests are signed with Shared Key (the account key), so they exercise the same
authentication path k2i uses.

Usage:
  azure_blob.py probe                          list containers (exit 0 when Azurite answers 200)
  azure_blob.py create-container NAME          create NAME; an existing NAME is fine
  azure_blob.py list CONTAINER [PREFIX]        JSON array of {"name", "size"} for blobs under PREFIX
  azure_blob.py blocks CONTAINER BLOB          JSON array of the blob's committed block sizes
                                               (empty for a blob uploaded in one request)

Environment: K2I_TEST_AZURE_ENDPOINT (e.g. http://127.0.0.1:18100/devstoreaccount1, path-style as
Azurite serves it), K2I_TEST_AZURE_ACCOUNT, K2I_TEST_AZURE_KEY (base64). The key never reaches the
output.
"""

import base64
import hashlib
import hmac
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from email.utils import formatdate

API_VERSION = "2021-10-04"


def request(method: str, path: str, query: dict[str, str], ok: tuple[int, ...] = (200,)) -> bytes:
    env = os.environ
    endpoint = env["K2I_TEST_AZURE_ENDPOINT"].rstrip("/")
    account = env["K2I_TEST_AZURE_ACCOUNT"]
    key = base64.b64decode(env["K2I_TEST_AZURE_KEY"])
    url = urllib.parse.urlsplit(endpoint + path)
    headers = {"x-ms-date": formatdate(usegmt=True), "x-ms-version": API_VERSION}
    # Shared Key: the canonical resource is /<account> followed by the URL's path, which for a
    # path-style (emulator) endpoint already starts with the account once more.
    resource = f"/{account}{url.path}" + "".join(
        f"\n{k.lower()}:{v}" for k, v in sorted(query.items())
    )
    canonical_headers = "".join(f"{k}:{v}\n" for k, v in sorted(headers.items()))
    # urllib sends a Content-Type with every body; say which, since it is signed. Content-Length
    # is signed as empty when 0.
    content_type = "application/octet-stream" if method == "PUT" else ""
    to_sign = f"{method}\n\n\n\n\n{content_type}\n" + "\n" * 6 + canonical_headers + resource
    signature = base64.b64encode(hmac.new(key, to_sign.encode(), hashlib.sha256).digest()).decode()
    headers["Authorization"] = f"SharedKey {account}:{signature}"
    full = urllib.parse.urlunsplit(url._replace(query=urllib.parse.urlencode(query)))
    if content_type:
        headers["Content-Type"] = content_type
    req = urllib.request.Request(full, method=method, headers=headers, data=b"" if method == "PUT" else None)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.read()
    except urllib.error.HTTPError as err:
        if err.code in ok:
            return err.read()
        raise SystemExit(f"azure_blob.py: {method} {url.path} answered HTTP {err.code}: {err.read()[:300]!r}")


def main(argv: list[str]) -> int:
    if not argv:
        raise SystemExit(__doc__)
    cmd, args = argv[0], argv[1:]
    if cmd == "probe":
        request("GET", "/", {"comp": "list"})
    elif cmd == "create-container" and len(args) == 1:
        request("PUT", f"/{args[0]}", {"restype": "container"}, ok=(201, 409))
    elif cmd == "list" and len(args) in (1, 2):
        blobs, marker = [], ""
        while True:
            query = {"restype": "container", "comp": "list"}
            if len(args) == 2:
                query["prefix"] = args[1]
            if marker:
                query["marker"] = marker
            root = ET.fromstring(request("GET", f"/{args[0]}", query))
            for blob in root.iter("Blob"):
                size = blob.findtext("Properties/Content-Length") or "0"
                blobs.append({"name": blob.findtext("Name"), "size": int(size)})
            marker = root.findtext("NextMarker") or ""
            if not marker:
                break
        json.dump(blobs, sys.stdout)
        sys.stdout.write("\n")
    elif cmd == "blocks" and len(args) == 2:
        path = f"/{args[0]}/{urllib.parse.quote(args[1])}"
        root = ET.fromstring(request("GET", path, {"comp": "blocklist", "blocklisttype": "committed"}))
        json.dump([int(b.findtext("Size") or "0") for b in root.iter("Block")], sys.stdout)
        sys.stdout.write("\n")
    else:
        raise SystemExit(__doc__)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
