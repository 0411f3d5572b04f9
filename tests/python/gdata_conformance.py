"""Drives the Google emulator with the real gdata-python3 client library (v2-style
modules): pages through the whole feed by next links, creates, updates with the etag,
gets 412 on a stale etag, deletes, and runs a batch of 100 inserts.
Usage: gdata_conformance.py HOST:PORT DOMAIN TOKEN EXPECTED_TOTAL"""
import sys

import atom.data
import gdata.client
import gdata.contacts.client as cc
import gdata.contacts.data as cd
import gdata.data

server, domain, token, expected = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])


class Bearer:
    def __init__(self, t):
        self.t = t

    def modify_request(self, req):
        req.headers["Authorization"] = "Bearer " + self.t


c = cc.ContactsClient(domain=domain, auth_token=Bearer(token))
c.ssl = False
c.server = server
feed_uri = c.get_feed_uri(contact_list=domain, scheme="http")

# 1. Page through the whole feed by next links.
q = cc.ContactsQuery(max_results=100, start_index=1)
feed = c.get_contacts(uri=feed_uri, q=q)
total = int(feed.total_results.text)
assert total == expected, f"totalResults {total} != {expected}"
ids = set()
pages = 0
while True:
    pages += 1
    for e in feed.entry:
        ids.add(e.id.text)
        assert e.etag, "every v3 entry carries gd:etag"
    nxt = feed.get_next_link()
    if nxt is None:
        break
    feed = c.get_feed(nxt.href, desired_class=cd.ContactsFeed)
assert len(ids) == expected, f"paged {len(ids)} distinct ids, expected {expected}"
print(f"paged {len(ids)} contacts in {pages} pages")

# 2. Create.
entry = cd.ContactEntry()
entry.name = gdata.data.Name(given_name=gdata.data.GivenName(text="Conformance"), family_name=gdata.data.FamilyName(text="Tëst & <Co>"))
entry.email.append(gdata.data.Email(address="conf@example.org", rel=gdata.data.WORK_REL, primary="true"))
entry.extended_property.append(gdata.data.ExtendedProperty(name="crm", value="42"))
created = c.create_contact(entry, insert_uri=feed_uri)
assert created.etag and created.id.text
print("created", created.id.text)

# 3. Update with the etag (If-Match from entry.etag, PUT to the edit link).
stale_etag = created.etag
created.name.family_name.text = "Updated"
updated = c.update(created)
assert updated.etag != stale_etag, "the etag changes on every write"
assert updated.name.family_name.text == "Updated"

# 4. A stale etag gives 412.
updated.etag = stale_etag
updated.name.family_name.text = "Lost update"
try:
    c.update(updated)
    raise AssertionError("a stale etag must be refused")
except gdata.client.RequestError as e:
    assert e.status == 412, e.status
print("stale etag -> 412")

# 5. Delete (with the current etag).
current = c.get_entry(created.get_edit_link().href, desired_class=cd.ContactEntry)
c.delete(current)
try:
    c.get_entry(created.get_edit_link().href, desired_class=cd.ContactEntry)
    raise AssertionError("deleted contact still served")
except gdata.client.RequestError as e:
    assert e.status == 404, e.status
print("deleted")

# 6. A batch of 100 inserts.
batch = cd.ContactsFeed()
for i in range(100):
    e = cd.ContactEntry()
    e.name = gdata.data.Name(full_name=gdata.data.FullName(text=f"Batch {i}"))
    e.email.append(gdata.data.Email(address=f"batch{i}@example.org", rel=gdata.data.HOME_REL))
    batch.add_insert(e, batch_id_string=str(i))
result = c.execute_batch(batch, url=feed_uri + "/batch")
codes = [int(e.batch_status.code) for e in result.entry]
assert codes == [201] * 100, codes
assert [e.batch_id.text for e in result.entry] == [str(i) for i in range(100)]
print("batch of 100 inserts -> 100 x 201")

# 7. A rel+label violation is refused with 400.
bad = cd.ContactEntry()
bad.email.append(gdata.data.Email(address="x@example.org", rel=gdata.data.WORK_REL, label="both"))
try:
    c.create_contact(bad, insert_uri=feed_uri)
    raise AssertionError("rel and label together must be refused")
except gdata.client.RequestError as e:
    assert e.status == 400, e.status
print("OK")
