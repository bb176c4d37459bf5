#!/usr/bin/env python3
"""Create or delete a blob container on Azurite, signed with Shared Key.

usage: azurite_container.py http://127.0.0.1:19010 create|delete NAME

Azurite has no unauthenticated way to create containers; this signs with the
emulator's well-known account and key. Standard library only.
"""
import base64
import hashlib
import hmac
import sys
import urllib.error
import urllib.request
from email.utils import formatdate

ACCOUNT = "devstoreaccount1"
KEY = base64.b64decode(
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def container_request(base: str, method: str, name: str) -> int:
    headers = {"x-ms-date": formatdate(usegmt=True), "x-ms-version": "2021-08-06"}
    # A PUT with a body type must sign it, or Azurite answers 403.
    content_type = "application/octet-stream" if method == "PUT" else ""
    signed_headers = "".join(f"{k}:{v}\n" for k, v in sorted(headers.items()))
    resource = f"/{ACCOUNT}/{ACCOUNT}/{name}\nrestype:container"
    # verb, 4 empty content headers, Content-MD5, Content-Type, then 6 empty
    # conditional/range headers, the x-ms-* headers and the resource.
    to_sign = f"{method}\n\n\n\n\n{content_type}\n\n\n\n\n\n\n{signed_headers}{resource}"
    signature = base64.b64encode(
        hmac.new(KEY, to_sign.encode(), hashlib.sha256).digest()
    ).decode()
    headers["Authorization"] = f"SharedKey {ACCOUNT}:{signature}"
    if content_type:
        headers["Content-Type"] = content_type
    request = urllib.request.Request(
        f"{base}/{ACCOUNT}/{name}?restype=container",
        method=method,
        headers=headers,
        data=b"" if method == "PUT" else None,
    )
    try:
        with urllib.request.urlopen(request) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def main() -> int:
    if len(sys.argv) != 4 or sys.argv[2] not in ("create", "delete"):
        print(__doc__, file=sys.stderr)
        return 2
    base, op, name = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3]
    status = container_request(base, "PUT" if op == "create" else "DELETE", name)
    ok = status in ((201, 409) if op == "create" else (202, 404))
    if not ok:
        print(f"azurite_container.py: {op} {name}: HTTP {status}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
