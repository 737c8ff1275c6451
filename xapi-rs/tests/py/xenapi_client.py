"""Drive xapi-rs with the PyPI XenAPI client (XML-RPC), as Ansible does."""
import sys
import XenAPI

url, user, pw = sys.argv[1], sys.argv[2], sys.argv[3]

bad = XenAPI.Session(url)
try:
    bad.xenapi.login_with_password(user, "wrong", "1.0", "xapi-rs-test")
    raise SystemExit("login with a wrong password succeeded")
except XenAPI.Failure as f:
    assert f.details[0] == "SESSION_AUTHENTICATION_FAILED", f.details
    assert f.details[1] == user, f.details

s = XenAPI.Session(url)
s.xenapi.login_with_password(user, pw, "1.0", "xapi-rs-test")
x = s.xenapi
pool = x.pool.get_all()[0]
master = x.pool.get_master(pool)
assert x.session.get_this_host(s.handle) == master
assert s.API_version == "2.21", s.API_version
sv = x.host.get_software_version(master)
[int(p) for p in sv["product_version"].split(".")]
assert "xapi" in sv
sr = x.pool.get_default_SR(pool)
assert x.SR.get_name_label(sr) == "Local storage", sr
assert x.SR.get_type(sr) == "file"
rec = x.host.get_record(master)
assert rec["API_version_major"] == "2", rec["API_version_major"]
assert rec["enabled"] is True
cpus = x.host_cpu.get_all_records()
assert len(cpus) == len(rec["host_CPUs"]) > 0
x.pool.set_name_label(pool, "py pool")
tok = x.event.inject("pool", pool)
ev = getattr(x.event, "from")(["pool"], tok, 1.0)
assert ev["events"][0]["snapshot"]["name_label"] == "py pool", ev
try:
    x.host.get_record("OpaqueRef:nope")
    raise SystemExit("expected HANDLE_INVALID")
except XenAPI.Failure as f:
    assert f.details == ["HANDLE_INVALID", "host", "OpaqueRef:nope"], f.details
s.xenapi.session.logout()
print("XENAPI-OK")
