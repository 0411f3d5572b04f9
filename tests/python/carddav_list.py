"""Lists what a CardDAV address book holds, the server's own way: PROPFIND Depth 1 for
the members and their ETags, then a plain GET of each, parsed with `vobject` (the vCard
library Radicale and Xandikos use; no code shared with contacts-etl). Prints one JSON
list, sorted by id, in the terms of the project's schema, so a test can compare the lake
with it row by row.

Usage: CARDDAV_PASSWORD=... [CARDDAV_ACCEPT=...] carddav_list.py ADDRESS_BOOK_URL USER

CARDDAV_ACCEPT, when set, is the GETs' Accept header: a server that converts (Cyrus IMAP
answers a plain GET of a vCard 4.0 with a 3.0 rendering) is asked for the version the
address book is read in."""
import json
import os
import sys
import urllib.parse
import xml.etree.ElementTree as ET

import requests
import vobject

DAV = "{DAV:}"
PROPFIND = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<D:propfind xmlns:D="DAV:"><D:prop><D:getetag/><D:resourcetype/></D:prop></D:propfind>'
)


def members(session, url):
    """(href, etag) of every non-collection member of the address book."""
    r = session.request(
        "PROPFIND",
        url,
        data=PROPFIND,
        headers={"Depth": "1", "Content-Type": "application/xml; charset=utf-8"},
    )
    r.raise_for_status()
    out = []
    for resp in ET.fromstring(r.content).iter(DAV + "response"):
        href = resp.findtext(DAV + "href")
        etag, collection = None, False
        for ps in resp.iter(DAV + "propstat"):
            if " 200 " not in (ps.findtext(DAV + "status") or ""):
                continue
            etag = ps.findtext(f"{DAV}prop/{DAV}getetag") or etag
            rt = ps.find(f"{DAV}prop/{DAV}resourcetype")
            collection = collection or (rt is not None and rt.find(DAV + "collection") is not None)
        if not collection:
            out.append((href, etag))
    return out


def values(card, name):
    return [c for c in card.contents.get(name, [])]


def text(card, name):
    v = values(card, name)
    return v[0].value if v else None


def row(href, etag, body):
    card = vobject.readOne(body.decode("utf-8"))
    n = values(card, "n")
    n = n[0].value if n else None
    name = urllib.parse.unquote(href.rstrip("/").rsplit("/", 1)[-1])
    cats = []
    for c in values(card, "categories"):
        cats.extend(c.value if isinstance(c.value, list) else [c.value])
    org = values(card, "org")
    return {
        "id": name[:-4] if name.endswith(".vcf") else name,
        "href": href,
        "etag": etag,
        "uid": text(card, "uid"),
        "display_name": text(card, "fn"),
        "given_name": (n.given or None) if n else None,
        "family_name": (n.family or None) if n else None,
        "nickname": text(card, "nickname"),
        "emails": [e.value for e in values(card, "email")],
        "phones": [t.value for t in values(card, "tel")],
        "organization": (org[0].value[0] if org and org[0].value else None),
        "title": text(card, "title"),
        "notes": text(card, "note"),
        "groups": cats,
        "photo": bool(values(card, "photo")),
        "x_properties": sorted(
            k.upper() for k in card.contents if k.lower().startswith("x-")
        ),
        "raw": body.decode("utf-8"),
    }


def main():
    url, user = sys.argv[1:3]
    s = requests.Session()
    # As bytes: requests would encode a str password as Latin-1; servers read UTF-8.
    s.auth = (user.encode(), os.environ["CARDDAV_PASSWORD"].encode())
    accept = os.environ.get("CARDDAV_ACCEPT")
    headers = {"Accept": accept} if accept else {}
    rows = []
    for href, etag in members(s, url):
        r = s.get(urllib.parse.urljoin(url, href), headers=headers)
        r.raise_for_status()
        rows.append(row(href, r.headers.get("ETag", etag), r.content))
    rows.sort(key=lambda r: r["id"])
    print(json.dumps(rows, ensure_ascii=False))


if __name__ == "__main__":
    main()
