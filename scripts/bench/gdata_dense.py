#!/usr/bin/env python3
"""An independent Google Domain Shared Contacts feed server for the benchmarks (B10).

Not our emulator: its pages are generated here, in Python, with the density real domains
show and our emulator's data did not (unknown namespaces declared on the feed and used on
many entries, XML blobs in extended properties, long multilingual notes, many list items),
written once to files, and served by a plain file server. It answers what a full sync asks:
the feed by `start-index` / `max-results` (1,000 per page), `updated-min` (every entry is
older than any run, so a catch-up read is an empty feed), and nothing else.

    gdata_dense.py generate DIR N [--indent]
        # N contacts as pages of 1,000 in DIR (once); --indent puts a newline and two
        # spaces before every tag, as servers that pretty-print do
    gdata_dense.py serve DIR [--chunked] [--gzip]
        # prints its base URL on stdout; --chunked sends bodies without a length, in
        # 16 KiB chunks, as many real servers do; --gzip compresses when asked
"""
import gzip
import http.server
import os
import random
import socketserver
import sys
import urllib.parse

PAGE = 1000
NS = {
    "": "http://www.w3.org/2005/Atom",
    "gd": "http://schemas.google.com/g/2005",
    "gContact": "http://schemas.google.com/contact/2008",
    "app": "http://www.w3.org/2007/app",
    "batch": "http://schemas.google.com/gdata/batch",
    "openSearch": "http://a9.com/-/spec/opensearch/1.1/",
    # Namespaces the client does not know: kept in `raw`.
    "crm": "urn:example:crm:2019",
    "sf": "http://soap.sforce.example/schemas/class/Contact",
    "x": "urn:vendor:sync:meta",
}
WORDS = [
    "Zürich", "Ärger", "東京", "北京市", "Москва", "Αθήνα", "القاهرة", "मुंबई", "São Paulo",
    "Kraków", "Reykjavík", "İstanbul", "Ελληνικά", "данные", "クライアント", "고객", "회의",
    "meeting", "follow-up", "renewal", "invoice", "contract", "<draft>", "R&D", "Q3", "\"VIP\"",
]
GIVEN = ["Anna", "José", "Søren", "Zoë", "Ólafur", "Mei", "Yūki", "Олег", "Δημήτρης", "Amira", "Kwame", "Priya"]
FAMILY = ["Müller", "García", "Nakamura", "O'Brien", "Ivanova", "Papadopoulos", "Haddad", "Okafor", "van der Berg", "Kowalski"]


def esc(s, attr=False):
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return s.replace('"', "&quot;") if attr else s


def note(r, n):
    words = [r.choice(WORDS) for _ in range(r.randint(15, 90))]
    lines = [" ".join(words[i:i + 12]) for i in range(0, len(words), 12)]
    return f"Notes for contact {n}\n" + "\n".join(lines)


def entry(r, n, base):
    cid = f"{n:x}d{r.getrandbits(32):08x}"
    given, family = r.choice(GIVEN), r.choice(FAMILY)
    full = f"{given} {family}"
    day = 1 + n % 28
    upd = f"2024-{1 + n % 12:02d}-{day:02d}T{n % 24:02d}:{n % 60:02d}:{(n * 7) % 60:02d}.{n % 1000:03d}Z"
    o = [f'<entry gd:etag="&quot;{cid}Q{n % 97}.&quot;">',
         f"<id>{base}/m8/feeds/contacts/example.com/base/{cid}</id>",
         f"<updated>{upd}</updated><app:edited>{upd}</app:edited>",
         '<category scheme="http://schemas.google.com/g/2005#kind" term="http://schemas.google.com/contact/2008#contact"/>',
         f"<title>{esc(full)}</title>",
         f'<content type="text">{esc(note(r, n))}</content>' if n % 8 == 0 else "",
         f'<link rel="http://schemas.google.com/contacts/2008/rel#photo" type="image/*" href="{base}/m8/feeds/photos/media/example.com/{cid}"/>',
         f'<link rel="self" type="application/atom+xml" href="{base}/m8/feeds/contacts/example.com/full/{cid}"/>',
         f'<link rel="edit" type="application/atom+xml" href="{base}/m8/feeds/contacts/example.com/full/{cid}/{n}"/>',
         f"<gd:name><gd:givenName>{esc(given)}</gd:givenName><gd:familyName>{esc(family)}</gd:familyName><gd:fullName>{esc(full)}</gd:fullName></gd:name>"]
    for k in range(r.randint(1, 2)):
        rel = r.choice(["work", "home", "other"])
        prim = ' primary="true"' if k == 0 else ""
        o.append(f'<gd:email rel="http://schemas.google.com/g/2005#{rel}" address="{esc(given.lower(), True)}.{n}.{k}@mail{k}.example.com"{prim}/>')
    for k in range(r.randint(1, 2)):
        o.append(f'<gd:phoneNumber rel="http://schemas.google.com/g/2005#mobile" uri="tel:+1-555-{n % 1000:03d}-{k:04d}">+1 555 {n % 1000:03d} {k:04d}</gd:phoneNumber>')
    for k in range(r.randint(0, 1)):
        city = r.choice(WORDS[:10])
        o.append(f'<gd:structuredPostalAddress rel="http://schemas.google.com/g/2005#work"><gd:street>{k + 1} {esc(r.choice(FAMILY))}straße {n}</gd:street>'
                 f"<gd:city>{esc(city)}</gd:city><gd:postcode>{n % 99999:05d}</gd:postcode><gd:country>{esc(r.choice(WORDS[:10]))}</gd:country>"
                 f"<gd:formattedAddress>{k + 1} {esc(r.choice(FAMILY))}straße {n}\n{esc(city)}</gd:formattedAddress></gd:structuredPostalAddress>")
    o.append(f'<gd:organization rel="http://schemas.google.com/g/2005#work"><gd:orgName>{esc(r.choice(FAMILY))} &amp; Söhne</gd:orgName><gd:orgTitle>{esc(r.choice(WORDS))}</gd:orgTitle></gd:organization>')
    if n % 2:
        o.append(f'<gd:im address="{esc(given.lower(), True)}{n}@chat.example" protocol="http://schemas.google.com/g/2005#JABBER" rel="http://schemas.google.com/g/2005#work"/>')
    for k in range(r.randint(0, 2)):
        o.append(f'<gContact:website href="https://example.com/{n}/{k}?a=1&amp;b={k}" rel="profile"/>')
    if n % 2 == 0:
        o.append(f'<gContact:relation rel="manager">{esc(r.choice(GIVEN))}</gContact:relation>')
    if n % 4 == 1:
        o.append(f'<gContact:event rel="anniversary"><gd:when startTime="20{n % 25:02d}-0{1 + n % 9}-1{n % 10}"/></gContact:event>')
    o.append(f'<gContact:externalId rel="account" value="ACC-{n}"/>')
    for k in range(r.randint(0, 2)):
        o.append(f'<gContact:userDefinedField key="field-{k}" value="{esc(r.choice(WORDS), True)} {n}"/>')
    # XML blobs in extended properties, as CRMs store them.
    if n % 2:
        o.append(f'<gd:extendedProperty name="crm-sync"><crm:record xmlns:crm="urn:example:crm:2019" id="{n}"><crm:owner>{esc(r.choice(GIVEN))}</crm:owner>'
             f"<crm:stage>{r.choice(['lead', 'customer', 'churned'])}</crm:stage><crm:tags><crm:tag>{esc(r.choice(WORDS))}</crm:tag><crm:tag>{esc(r.choice(WORDS))}</crm:tag></crm:tags></crm:record></gd:extendedProperty>")
    o.append(f'<gd:extendedProperty name="legacy-id" value="L-{n:08d}"/>')
    if n % 3 == 0:
        # Unknown elements in namespaces the client does not know.
        o.append(f'<sf:Contact sf:version="52"><sf:AccountId>001{n:012d}</sf:AccountId><sf:LeadSource>{esc(r.choice(WORDS))}</sf:LeadSource></sf:Contact>')
        o.append(f'<x:syncState x:rev="{n % 17}" x:origin="mobile"/>')
    for g in range(1):
        o.append(f'<gContact:groupMembershipInfo deleted="false" href="{base}/m8/feeds/groups/example.com/base/g{g + n % 5}"/>')
    o.append("</entry>")
    return "".join(o)


def feed_head(base, start, total, count, nxt):
    decls = " ".join(f'xmlns{":" + k if k else ""}="{v}"' for k, v in NS.items())
    self_q = f"max-results={PAGE}&amp;start-index={start}"
    o = [f"<?xml version='1.0' encoding='UTF-8'?><feed {decls} gd:etag=\"W/&quot;dense{start}.&quot;\">",
         "<id>example.com</id><updated>2026-01-01T00:00:00.000Z</updated>",
         '<category scheme="http://schemas.google.com/g/2005#kind" term="http://schemas.google.com/contact/2008#contact"/>',
         "<title>example.com's Contacts</title>",
         f'<link rel="self" type="application/atom+xml" href="{base}/m8/feeds/contacts/example.com/full?{self_q}"/>']
    if nxt:
        o.append(f'<link rel="next" type="application/atom+xml" href="{base}/m8/feeds/contacts/example.com/full?max-results={PAGE}&amp;start-index={start + count}"/>')
    o.append(f"<openSearch:totalResults>{total}</openSearch:totalResults><openSearch:startIndex>{start}</openSearch:startIndex><openSearch:itemsPerPage>{PAGE}</openSearch:itemsPerPage>")
    return "".join(o)


BASE = "@@BASE@@"  # replaced by the served origin


def pretty(xml):
    """The page indented: a newline and two spaces before every tag of an entry."""
    return xml.replace("><", ">\n  <")


def generate(d, n, indent=False):
    os.makedirs(d, exist_ok=True)
    r = random.Random(2024)
    size = 0
    for start in range(1, n + 1, PAGE):
        count = min(PAGE, n - start + 1)
        body = feed_head(BASE, start, n, count, start + count <= n) + "".join(entry(r, i, BASE) for i in range(start, start + count)) + "</feed>"
        data = (pretty(body) if indent else body).encode()
        size += len(data)
        with open(os.path.join(d, f"{start}.xml"), "wb") as f:
            f.write(data)
    with open(os.path.join(d, "total"), "w") as f:
        f.write(str(n))
    print(f"{n} contacts, {size} bytes of Atom in {d}", file=sys.stderr)


def serve(d, chunked, use_gzip):
    total = int(open(os.path.join(d, "total")).read())

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_GET(self):
            u = urllib.parse.urlsplit(self.path)
            q = dict(urllib.parse.parse_qsl(u.query))
            base = f"http://{self.headers.get('Host')}"
            if not u.path.startswith("/m8/feeds/contacts/"):
                return self.send_error(404)
            if "updated-min" in q:
                body = (feed_head(base, 1, 0, 0, False) + "</feed>").encode()
            else:
                start = int(q.get("start-index", "1"))
                path = os.path.join(d, f"{start}.xml")
                if not os.path.exists(path):
                    body = (feed_head(base, start, total, 0, False) + "</feed>").encode()
                else:
                    body = open(path, "rb").read().replace(BASE.encode(), base.encode())
            self.send_response(200)
            self.send_header("Content-Type", "application/atom+xml; charset=UTF-8; type=feed")
            if use_gzip and "gzip" in self.headers.get("Accept-Encoding", ""):
                body = gzip.compress(body, 6)
                self.send_header("Content-Encoding", "gzip")
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for i in range(0, len(body), 16384):
                    part = body[i:i + 16384]
                    self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

    class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True

    s = S(("127.0.0.1", 0), H)
    print(f"http://127.0.0.1:{s.server_address[1]}", flush=True)
    s.serve_forever()


if __name__ == "__main__":
    if sys.argv[1] == "generate":
        generate(sys.argv[2], int(sys.argv[3]), "--indent" in sys.argv)
    else:
        serve(sys.argv[2], "--chunked" in sys.argv, "--gzip" in sys.argv)
