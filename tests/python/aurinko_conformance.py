"""Drives the Aurinko emulator with plain HTTP (urllib): sync start until ready, the
updated and deleted streams by delta and page tokens, create, PATCH with If-Match, 412 on
a stale etag, delete, 404 after.
Usage: aurinko_conformance.py BASE_URL TOKEN EXPECTED_TOTAL"""
import json
import sys
import urllib.error
import urllib.parse
import urllib.request

base, token, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])


def call(method, path, body=None, headers=None, params=None):
    url = base + path + ("?" + urllib.parse.urlencode(params) if params else "")
    data = json.dumps(body).encode() if body is not None else None
    h = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
    h.update(headers or {})
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, (json.loads(raw) if raw else None)


status, s = call("POST", "/v1/contacts/sync", params={"awaitReady": "false"})
assert status == 200 and s["ready"] is False, s
for _ in range(5):
    status, s = call("POST", "/v1/contacts/sync")
    if s.get("ready"):
        break
assert s["ready"] and s["syncUpdatedToken"] and s["syncDeletedToken"], s

ids, pages = set(), 0
params = {"deltaToken": s["syncUpdatedToken"]}
while True:
    status, page = call("GET", "/v1/contacts/sync/updated", params=params)
    assert status == 200, page
    pages += 1
    assert page["length"] == len(page["records"])
    assert not ("nextPageToken" in page and "nextDeltaToken" in page)
    ids.update(r["id"] for r in page["records"])
    if "nextPageToken" in page:
        params = {"pageToken": page["nextPageToken"]}
    else:
        delta = page["nextDeltaToken"]
        break
assert len(ids) == expected, (len(ids), expected)
print(f"synced {len(ids)} contacts in {pages} pages")

status, created = call("POST", "/v1/contacts", {"name": {"givenName": "Sam", "familyName": "Black"}, "emailAddresses": [{"address": "sam@aurinko.io", "type": "work"}]})
assert status == 201 and created["id"] and created["etag"], created
cid, etag = created["id"], created["etag"]
status, patched = call("PATCH", f"/v1/contacts/{cid}", {"notes": "patched"}, {"If-Match": etag})
assert status == 200 and patched["etag"] != etag, patched
status, err = call("PATCH", f"/v1/contacts/{cid}", {"notes": "lost"}, {"If-Match": etag})
assert status == 412, (status, err)
status, err = call("PATCH", f"/v1/contacts/{cid}", {"phoneNumbers": [{"number": "1", "type": "bogus"}]}, {"If-Match": patched["etag"]})
assert status == 400 and err["code"] == "badRequest", err

status, page = call("GET", "/v1/contacts/sync/updated", params={"deltaToken": delta})
assert status == 200 and [r["id"] for r in page["records"]] == [cid], page
status, _ = call("DELETE", f"/v1/contacts/{cid}")
assert status == 200
status, err = call("GET", f"/v1/contacts/{cid}")
assert status == 404 and err["code"] == "not_found", err
status, page = call("GET", "/v1/contacts/sync/deleted", params={"deltaToken": s["syncDeletedToken"]})
assert status == 200 and cid in [r["id"] for r in page["records"]], page
status, err = call("GET", "/v1/contacts/sync/updated", params={"pageToken": "garbage"})
assert status == 400 and err["code"] == "token.notValid", err
print("OK")
