"""Mapping files shared by the ingest tests."""

# the retail example of the README: a purchases-only export with its own column names
RETAIL_MAPPING = """\
[events]
user_id = "customer_id"
ts = { column = "date", format = "%Y%m%d" }
event_type = { value = "purchase" }
amount = "dollars"
properties = ["quantity"]
"""
